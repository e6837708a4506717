-- Server-side search (POST /search) and the user directory (POST /user_directory/search).
-- Both read the tables the append path already keeps, through expression indexes: no writer
-- of events changes, and Postgres keeps the index entries in the row's own transaction.
--
-- The functions below that read `events.json` (the canonical JSON serde_json wrote, where
-- control characters are the only escapes) never raise: an index expression that raised would
-- refuse the row, and with it the whole batch it was written in. Postgres cannot hold a string
-- with \u0000 as jsonb (signed events from other servers may carry one), so that escape is
-- read as U+FFFD; whatever else Postgres refuses (or a text too long for a tsvector) gives
-- NULL. Catching an error takes a subtransaction, which Postgres refuses during a parallel
-- query, so these functions are left parallel unsafe (no plan that calls them needs to run in
-- parallel).

-- The words search reads in an event, by the key a client names: `content.body` of
-- m.room.message, `content.name` of m.room.name, `content.topic` of m.room.topic (English
-- stemming, as Synapse); NULL for other types and where the key is absent. One more lexeme,
-- '!<room_nid>', names the room: no parser makes a word with '!', and a search ANDs the term
-- with the searcher's rooms, so the index intersects the term's events with the rooms' inside
-- the index and never reads a row of a room the searcher is not in.
CREATE FUNCTION trellis_search_vector(room_nid BIGINT, event_type TEXT, json TEXT) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN to_tsvector('pg_catalog.english',
            (replace(json, E'\\u0000', E'\\ufffd')::jsonb) -> 'content' ->> CASE event_type
                WHEN 'm.room.message' THEN 'body'
                WHEN 'm.room.name' THEN 'name'
                WHEN 'm.room.topic' THEN 'topic'
            END)
        || array_to_tsvector(ARRAY['!' || room_nid]);
EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
    RETURN NULL;
END
$$;

-- A search term as a client types it (quoted phrases, `or`, `-word`, as websearch_to_tsquery
-- reads them), every word matching as a prefix of a stemmed word, as Synapse does. The
-- lexemes are stemmed once, by websearch_to_tsquery, and given `:*` in its output text.
CREATE FUNCTION trellis_search_query(term TEXT) RETURNS tsquery
LANGUAGE plpgsql IMMUTABLE STRICT
-- A term of stop words only is no error; the notice saying so is not worth a log line.
SET client_min_messages = warning AS $$
BEGIN
    -- The output separates operators and quoted lexemes by spaces; lexemes hold no spaces.
    RETURN coalesce(
        (SELECT string_agg(CASE WHEN strpos(w, '''') > 0 THEN w || ':*' ELSE w END, ' ')
         FROM regexp_split_to_table(websearch_to_tsquery('pg_catalog.english', term)::text, ' ') AS w),
        '')::tsquery;
EXCEPTION WHEN syntax_error OR data_exception THEN
    RETURN websearch_to_tsquery('pg_catalog.english', term);
END
$$;

-- Message search: one partial index over the three keys' words. The event type stands in the
-- predicate alone, so the columns updated after an event is stored (redacted_by, outlier,
-- soft_failed) keep their updates HOT; queries test them row by row.
CREATE INDEX events_search_idx ON events USING GIN (trellis_search_vector(room_nid, event_type, json))
    WHERE event_type IN ('m.room.message', 'm.room.name', 'm.room.topic');

-- The words of a user ID and display name for the user directory: ASCII punctuation splits
-- words ('@alice.smith:example.org' gives alice, smith, example, org), no stemming, display
-- name words weighted above user ID words.
CREATE FUNCTION trellis_user_vector(user_id TEXT, displayname TEXT) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('pg_catalog.simple',
               translate(coalesce(displayname, ''), E'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~',
                         '                                ')), 'A')
        || setweight(to_tsvector('pg_catalog.simple',
               translate(user_id, E'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~',
                         '                                ')), 'B')
$$;

-- A join event's words for the user directory (its state key and display name); NULL for
-- other memberships, which the directory never shows.
CREATE FUNCTION trellis_member_vector(json TEXT) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    event JSONB;
BEGIN
    event := replace(json, E'\\u0000', E'\\ufffd')::jsonb;
    IF event -> 'content' ->> 'membership' IS DISTINCT FROM 'join' THEN
        RETURN NULL;
    END IF;
    RETURN trellis_user_vector(event ->> 'state_key', event -> 'content' ->> 'displayname');
EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
    RETURN NULL;
END
$$;

-- An event's content as jsonb for reads (a join rule, a member's display name), with the
-- same care: NULL rather than an error.
CREATE FUNCTION trellis_event_content(json TEXT) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN (replace(json, E'\\u0000', E'\\ufffd')::jsonb) -> 'content';
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

-- The user directory: remote users are found by their current join events (room_members
-- names which one is current), local users by their own profile.
CREATE INDEX events_member_directory_idx ON events USING GIN (trellis_member_vector(json))
    WHERE event_type = 'm.room.member';
CREATE INDEX users_directory_idx ON users USING GIN (trellis_user_vector(user_id, displayname))
    WHERE NOT deactivated;
