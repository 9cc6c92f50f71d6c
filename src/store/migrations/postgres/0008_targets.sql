-- Downstream targets ([[target]], src/target/). An applied plan leaves one outbox row
-- per target and changed object, in the transaction that applies it: a crash between
-- the commit and the delivery, or an outage of the target, only delays the change.
-- `object` names what the row is about (user:ID, team:ID, member:TEAM:USER); rows of
-- one object are delivered in id order. Delivered rows are deleted.
CREATE TABLE target_outbox (
    id           BIGSERIAL PRIMARY KEY,
    target       TEXT NOT NULL,
    object       TEXT NOT NULL,
    op           TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    created      TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_attempt TEXT NOT NULL,
    last_error   TEXT
);
CREATE INDEX target_outbox_due ON target_outbox (target, next_attempt, id);

-- Our user or team id → the target's id for it. `managed`: scimsync created it (its
-- metadata says so) and may change and delete it; false for an adopted user, which
-- is linked but never modified.
CREATE TABLE target_links (
    target    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    local_id  TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    managed   BOOLEAN NOT NULL,
    PRIMARY KEY (target, kind, local_id)
);
