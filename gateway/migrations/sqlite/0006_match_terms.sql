-- How many source records carry each normalised name, for term-frequency adjustment: agreeing
-- on a rare family name counts for more than agreeing on a common one. The row whose value is
-- empty holds the comparison's total in `n` and the sum of every name's count squared in `sq`
-- (how common the average name is). Kept in step by every upsert, in its transaction.
CREATE TABLE match_terms (
    comparison TEXT NOT NULL,
    value      TEXT NOT NULL,
    n          BIGINT NOT NULL,
    sq         BIGINT NOT NULL,
    PRIMARY KEY (comparison, value)
);
