-- A kept plan's one-line summary (its counts and the first things it removes, by
-- name), as JSON: the console's and `scimsync plans list`'s lists show it without
-- reading the plan itself, which can run to megabytes. NULL for plans kept before
-- this column: readers then summarise the plan.
ALTER TABLE quarantined_plans ADD COLUMN summary TEXT;
