-- Ownership belongs to an IdP whichever way its data arrives: a SCIM token is bound to
-- the IdP it pushes for, and what it creates is owned by `scim:<idp>`. Tokens and rows
-- from before the binding belong to the IdP named "default" (see README, "Who owns what").
ALTER TABLE scim_tokens ADD COLUMN idp TEXT NOT NULL DEFAULT 'default';

UPDATE users SET source = 'scim:default' WHERE source = 'scim';
UPDATE teams SET source = 'scim:default' WHERE source = 'scim';
UPDATE memberships SET source = 'scim:default' WHERE source = 'scim';
