-- Which version of the userName folding (domain::FOLD_VERSION) the users.user_name_folded
-- column was computed with. At start the daemon compares it with its own and, only when
-- they differ, re-folds every user in one transaction (store/refold.rs), so an ordinary
-- start reads this one row instead of every user.
CREATE TABLE fold_versions (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Version 1 is the str::to_lowercase folding that wrote every existing row.
INSERT INTO fold_versions (name, version) VALUES ('user_name_folded', 1);
