-- Plans a guard refused in a scheduled or sign-in sync, kept for an operator to approve
-- or reject (`scimsync plans`). `snapshot` is the desired state the plan was made from,
-- so that approving a plan whose store has moved on can plan it again; `fingerprint` is
-- the store's state the plan was made against (reconcile::fingerprint).
CREATE TABLE quarantined_plans (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    idp           TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    reason        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    plan          TEXT NOT NULL,
    rendered      TEXT NOT NULL,
    snapshot      TEXT NOT NULL,
    created       TEXT NOT NULL,
    decided       TEXT,
    decision      TEXT,
    decided_by    TEXT,
    superseded_by INTEGER
);
-- At most one plan of an IdP awaits a decision: a new refusal supersedes it.
CREATE UNIQUE INDEX quarantined_plans_pending ON quarantined_plans (idp) WHERE decided IS NULL;
