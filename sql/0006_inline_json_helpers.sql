-- The JSON helpers of migration 4, rewritten so PostgreSQL inlines them into the write
-- functions' expressions. Same output, byte for byte (tests/api/writes.rs compares the
-- event with the API's answer); only how they are declared changes:
-- - no FROM in the body: a scalar SQL function is inlined only when its body is a bare
--   SELECT of one expression;
-- - not STRICT: a STRICT function is inlined only when its body is provably strict, which a
--   CASE is not (NULL in still gives NULL out: every branch is NULL then);
-- - `boardcast_json_time` is STABLE, not IMMUTABLE: `to_char(timestamp, text)` is STABLE,
--   and a function is not inlined when its body is more volatile than it claims.
-- Not inlined, each call was set up (parsed and planned) again in every writing
-- transaction, seven times per note write: about three quarters of a note write's
-- PostgreSQL time under pgbench (docs/PERFORMANCE.md, "Writes in one round trip").
-- Backward compatible: the functions keep their names, arguments and results, so code
-- still running migration 4's expectations gets the same text.

CREATE OR REPLACE FUNCTION boardcast_json_float(v double precision) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v::text ~ '^-?[0-9]+$' THEN v::text || '.0' ELSE v::text END
$$;

CREATE OR REPLACE FUNCTION boardcast_json_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE
               WHEN extract(microseconds FROM t AT TIME ZONE 'UTC')::bigint % 1000000 = 0
                   THEN ''
               WHEN extract(microseconds FROM t AT TIME ZONE 'UTC')::bigint % 1000 = 0
                   THEN '.' || lpad((extract(microseconds FROM t AT TIME ZONE 'UTC')::bigint
                                     % 1000000 / 1000)::text, 3, '0')
               ELSE '.' || lpad((extract(microseconds FROM t AT TIME ZONE 'UTC')::bigint
                                 % 1000000)::text, 6, '0')
           END
        || 'Z'
$$;
