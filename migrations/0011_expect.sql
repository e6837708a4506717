-- A write built on the room's tip as remembered in memory checks, in the same statement,
-- that the tip still holds; when it does not, this raises and the statement writes nothing
-- (the caller recognises the SQLSTATE and rebuilds from what is stored).
CREATE FUNCTION trellis_expect(holds BOOLEAN) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    IF holds IS NOT TRUE THEN
        RAISE EXCEPTION 'the room''s tip moved under a write built on it'
            USING ERRCODE = 'TR001';
    END IF;
    RETURN TRUE;
END
$$;
