-- One row counting the changes made to the master child index. Every change takes the index's
-- write lock by moving it on (`Store::lock_index`), so a bulk import that finds the count one
-- past its own last batch's knows no other writer touched the index in between, and keeps
-- what it holds in memory instead of reading it back.
CREATE TABLE index_epoch (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO index_epoch (id, n) VALUES (1, 0);
