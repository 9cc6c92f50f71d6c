-- Admin console sessions (src/ui). Only a hash of the session id is kept, so a copy
-- of the database (a backup) does not hold live cookies. A session belongs to the
-- admin token that signed in; revoking the token ends its sessions (checked on every
-- request, by joining scim_tokens).
CREATE TABLE ui_sessions (
    hash       TEXT PRIMARY KEY,
    token_name TEXT NOT NULL,
    created    TEXT NOT NULL,
    last_seen  TEXT NOT NULL
);
CREATE INDEX ui_sessions_last_seen ON ui_sessions (last_seen);

-- The console's user page lists a user's recent audit entries, and its Audit page
-- filters by target: without this index each is a walk of the whole log.
CREATE INDEX audit_log_target ON audit_log (target, id);

-- The console lists users in userName order, which the store's lists sort by the
-- folded name, then created and id: with the unique index alone the database sorted
-- the whole table for a page (over a second for a deep page of 100,000 users); this
-- index hands them over in that order, so any page is a walk of the index.
CREATE INDEX users_name_order ON users (user_name_folded, created, id);
