-- Identifiers are UUID text and timestamps are fixed-width RFC 3339 UTC text
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ), so the schema and its ordering are the same on
-- SQLite and PostgreSQL.

CREATE TABLE users (
    id               TEXT PRIMARY KEY,
    user_name        TEXT NOT NULL,
    -- userName is case-insensitive (RFC 7643 caseExact=false): uniqueness and
    -- lookups use the folded form.
    user_name_folded TEXT NOT NULL UNIQUE,
    external_id      TEXT,
    email            TEXT,
    display_name     TEXT,
    given_name       TEXT,
    family_name      TEXT,
    role             TEXT NOT NULL,
    -- INTEGER 0/1 rather than BOOLEAN: sqlx's Any driver cannot decode SQLite's BOOLEAN type.
    active           INTEGER NOT NULL,
    attributes       TEXT NOT NULL DEFAULT '{}',
    source           TEXT NOT NULL,
    created          TEXT NOT NULL,
    modified         TEXT NOT NULL,
    version          BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX users_external_id ON users (external_id);
CREATE INDEX users_email ON users (email);
CREATE INDEX users_created ON users (created, id);

CREATE TABLE teams (
    id                  TEXT PRIMARY KEY,
    display_name        TEXT NOT NULL,
    display_name_folded TEXT NOT NULL,
    external_id         TEXT,
    metadata            TEXT NOT NULL DEFAULT '{}',
    source              TEXT NOT NULL,
    created             TEXT NOT NULL,
    modified            TEXT NOT NULL,
    version             BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX teams_external_id ON teams (external_id);
CREATE INDEX teams_display_name ON teams (display_name_folded);
CREATE INDEX teams_created ON teams (created, id);

-- The single truth about who is in which team.
CREATE TABLE memberships (
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source  TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- No ON DELETE CASCADE: keys are removed explicitly, with an audit copy, so a
-- user can never disappear while a key of theirs silently stays valid.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    team_id    TEXT REFERENCES teams (id),
    name       TEXT,
    prefix     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created    TEXT NOT NULL,
    expires    TEXT,
    blocked_by TEXT
);
CREATE INDEX api_keys_user ON api_keys (user_id);
CREATE INDEX api_keys_team ON api_keys (team_id);

-- What a purge or revocation removed. The hash is deliberately not kept.
CREATE TABLE deleted_api_keys (
    id       TEXT PRIMARY KEY,
    user_id  TEXT NOT NULL,
    team_id  TEXT,
    name     TEXT,
    prefix   TEXT NOT NULL,
    created  TEXT NOT NULL,
    deleted  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    trigger  TEXT NOT NULL,
    actor    TEXT NOT NULL
);
CREATE INDEX deleted_api_keys_user ON deleted_api_keys (user_id);

CREATE TABLE scim_tokens (
    name      TEXT PRIMARY KEY,
    scope     TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE,
    created   TEXT NOT NULL,
    last_used TEXT,
    revoked   TEXT
);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    trigger   TEXT NOT NULL,
    actor     TEXT NOT NULL,
    operation TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE sync_state (
    idp                  TEXT PRIMARY KEY,
    last_pull            TEXT,
    last_success         TEXT,
    delta_cursor         TEXT,
    last_result          TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0
);
