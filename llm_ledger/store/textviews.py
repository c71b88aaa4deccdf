"""The text columns of the analyst views (view set 0008): SQL per engine, frozen at 0008.

``system_prompt``, ``prompt``, ``answer`` and ``finish_reason`` are computed from the
stored JSON by each engine's own JSON functions (see migration 0008's docstring for what
each one means). Migration 0008 builds its search index from the same expressions, and
:data:`llm_ledger.store.viewsets.VIEW_SETS` ``["0008"]`` is :func:`views`. Like every view set,
this is frozen: a later revision that changes a text column copies what it changes.
"""

from __future__ import annotations

# The columns the calls view had before this revision (view set 0007), in order.
CALL_COLUMNS = (
    "id, call_uuid, created_at, kind, api_type, endpoint_host, model, namespace, "
    "request_hash, slot, response_id, cache_status, status, attempts, latency_ms, "
    "prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, "
    "tokens_estimated, items_total, items_hit, error_type, error_message, cost_usd, "
    "saved_usd, cost_note, price_version, run, tags, template, library_version, "
    "stream_status, first_chunk_ms, chunks"
)
OLD_VIEWS = {
    "calls": f"SELECT {CALL_COLUMNS} FROM call_log",
    "cached_answers": (
        "SELECT c.id AS id, c.namespace AS namespace, c.request_hash AS request_hash, "
        "c.slot AS slot, q.kind AS kind, q.model AS model, q.request AS request, "
        "r.response AS response, r.cost_usd AS cost_usd, c.created_at AS created_at, "
        "c.updated_at AS updated_at FROM cache_entries c "
        "JOIN requests q ON q.request_hash = c.request_hash "
        "JOIN responses r ON r.id = c.response_id"
    ),
}
TEXT_COLUMNS = ("system_prompt", "prompt", "answer", "finish_reason")
SYSTEM_ROLES = "('system', 'developer')"
SYSTEM_PATH = "'$.messages[0].content'"
ANSWER_PATH = "'$.choices[0].message.content'"


# --- SQLite: JSON1 expressions over a request / response column ---------------


def _sqlite_content(doc: str, path: str) -> str:
    """The text of a message content at ``path``: a string, or the text parts of a list."""
    return (
        f"CASE json_type({doc}, {path}) WHEN 'text' THEN json_extract({doc}, {path}) "
        f"WHEN 'array' THEN (SELECT group_concat(json_extract(p.value, '$.text'), ' ') "
        f"FROM json_each({doc}, {path}) p WHERE json_extract(p.value, '$.type') = 'text') END"
    )


def sqlite_texts(request: str, response: str) -> dict[str, str]:
    last_user = _sqlite_content(request, "'$.messages[' || m.key || '].content'")
    return {
        "system_prompt": (
            f"CASE WHEN json_extract({request}, '$.messages[0].role') IN {SYSTEM_ROLES} "
            f"THEN {_sqlite_content(request, SYSTEM_PATH)} END"
        ),
        "prompt": (
            f"COALESCE((SELECT {last_user} FROM json_each({request}, '$.messages') m "
            "WHERE json_extract(m.value, '$.role') = 'user' ORDER BY m.key DESC LIMIT 1), "
            f"CASE json_type({request}, '$.input') WHEN 'text' THEN json_extract({request}, "
            f"'$.input') WHEN 'array' THEN (SELECT group_concat(i.value, ' ') FROM "
            f"json_each({request}, '$.input') i WHERE i.type = 'text') END)"
        ),
        "answer": (
            "COALESCE(NULLIF("
            f"{_sqlite_content(response, ANSWER_PATH)}"
            f", ''), 'refusal: ' || json_extract({response}, '$.choices[0].message.refusal'), "
            "(SELECT 'tool calls: ' || group_concat(json_extract(t.value, '$.function.name') "
            "|| '(' || COALESCE(json_extract(t.value, '$.function.arguments'), '') || ')', '; ') "
            f"FROM json_each({response}, '$.choices[0].message.tool_calls') t))"
        ),
        "finish_reason": f"json_extract({response}, '$.choices[0].finish_reason')",
    }


# --- MariaDB / MySQL: JSON functions and JSON_TABLE ---------------------------


def _maria_content(value: str) -> str:
    """The text of a JSON content value (a JSON document expression)."""
    return (
        f"CASE JSON_TYPE({value}) WHEN 'STRING' THEN JSON_UNQUOTE({value}) WHEN 'ARRAY' THEN "
        "(SELECT GROUP_CONCAT(p.t ORDER BY p.i SEPARATOR ' ') FROM JSON_TABLE("
        f"{value}, '$[*]' COLUMNS (i FOR ORDINALITY, ty VARCHAR(32) PATH '$.type', "
        "t LONGTEXT PATH '$.text')) p WHERE p.ty = 'text') END"
    )


def _maria_strings(value: str) -> str:
    """An embedding input: a string, or the strings of a list, joined by spaces."""
    item = f"JSON_EXTRACT({value}, CONCAT('$[', p.i - 1, ']'))"
    return (
        f"CASE JSON_TYPE({value}) WHEN 'STRING' THEN JSON_UNQUOTE({value}) WHEN 'ARRAY' THEN "
        "(SELECT GROUP_CONCAT(p.s ORDER BY p.i SEPARATOR ' ') FROM JSON_TABLE("
        f"{value}, '$[*]' COLUMNS (i FOR ORDINALITY, s LONGTEXT PATH '$')) p "
        f"WHERE JSON_TYPE({item}) = 'STRING') END"
    )


def _maria_at(doc: str, path: str) -> str:
    return f"JSON_EXTRACT({doc}, '{path}')"


def maria_texts(request: str, response: str) -> dict[str, str]:
    last_user = _maria_content(
        f"JSON_EXTRACT({request}, CONCAT('$.messages[', j.i - 1, '].content'))"
    )
    tool = "CONCAT(t.name, '(', COALESCE(t.args, ''), ')')"
    return {
        "system_prompt": (
            f"CASE WHEN JSON_VALUE({request}, '$.messages[0].role') IN {SYSTEM_ROLES} THEN "
            f"{_maria_content(_maria_at(request, '$.messages[0].content'))}"
            " END"
        ),
        "prompt": (
            f"COALESCE((SELECT {last_user} FROM JSON_TABLE({request}, '$.messages[*]' "
            "COLUMNS (i FOR ORDINALITY, role VARCHAR(32) PATH '$.role')) j "
            "WHERE j.role = 'user' ORDER BY j.i DESC LIMIT 1), "
            f"{_maria_strings(_maria_at(request, '$.input'))})"
        ),
        "answer": (
            "COALESCE(NULLIF("
            f"{_maria_content(_maria_at(response, '$.choices[0].message.content'))}"
            f", ''), CONCAT('refusal: ', JSON_VALUE({response}, "
            "'$.choices[0].message.refusal')), (SELECT CONCAT('tool calls: ', "
            f"GROUP_CONCAT({tool} ORDER BY t.i SEPARATOR '; ')) FROM JSON_TABLE({response}, "
            "'$.choices[0].message.tool_calls[*]' COLUMNS (i FOR ORDINALITY, "
            "name VARCHAR(200) PATH '$.function.name', args LONGTEXT PATH "
            "'$.function.arguments')) t))"
        ),
        "finish_reason": f"JSON_VALUE({response}, '$.choices[0].finish_reason')",
    }


# --- PostgreSQL: SQL functions (an index expression cannot hold a subquery) ----

_CLEAN = " FROM (SELECT ledger_nul_free(r) AS r) AS clean"  # r: the NUL-free copy
PG_FUNCTIONS = {
    # text cannot hold NUL: without this, a document holding \\u0000 (which json keeps,
    # migration 0006) would make the index expression, hence the write, fail.
    "ledger_nul_free(r json)": "SELECT replace(r::text, '\\u0000', ' ')::json",
    "ledger_content_text(c json)": """
        SELECT CASE json_typeof(c)
          WHEN 'string' THEN c #>> '{}'
          WHEN 'array' THEN (
            SELECT string_agg(p ->> 'text', ' ' ORDER BY n)
            FROM json_array_elements(c) WITH ORDINALITY AS e(p, n)
            WHERE p ->> 'type' = 'text')
        END""",
    "ledger_system_prompt(r json)": f"""
        SELECT CASE WHEN r #>> '{{messages,0,role}}' IN {SYSTEM_ROLES}
          THEN ledger_content_text(r #> '{{messages,0,content}}') END{_CLEAN}""",
    "ledger_prompt(r json)": f"""
        SELECT COALESCE(
          (SELECT ledger_content_text(m -> 'content')
           FROM json_array_elements(
             CASE WHEN json_typeof(r -> 'messages') = 'array' THEN r -> 'messages' END
           ) WITH ORDINALITY AS e(m, n)
           WHERE m ->> 'role' = 'user' ORDER BY n DESC LIMIT 1),
          CASE json_typeof(r -> 'input')
            WHEN 'string' THEN r ->> 'input'
            WHEN 'array' THEN (
              SELECT string_agg(x #>> '{{}}', ' ' ORDER BY n)
              FROM json_array_elements(r -> 'input') WITH ORDINALITY AS e(x, n)
              WHERE json_typeof(x) = 'string')
          END){_CLEAN}""",
    "ledger_answer(r json)": f"""
        SELECT COALESCE(
          NULLIF(ledger_content_text(r #> '{{choices,0,message,content}}'), ''),
          'refusal: ' || (r #>> '{{choices,0,message,refusal}}'),
          (SELECT 'tool calls: ' || string_agg(
             (t #>> '{{function,name}}') || '(' || COALESCE(t #>> '{{function,arguments}}', '')
             || ')', '; ' ORDER BY n)
           FROM json_array_elements(
             CASE WHEN json_typeof(r #> '{{choices,0,message,tool_calls}}') = 'array'
             THEN r #> '{{choices,0,message,tool_calls}}' END
           ) WITH ORDINALITY AS e(t, n))){_CLEAN}""",
    "ledger_finish_reason(r json)": f"SELECT r #>> '{{choices,0,finish_reason}}'{_CLEAN}",
    # What the two GIN indexes hold; llm_ledger/search.py queries exactly these expressions.
    "ledger_request_text(r json)": """
        SELECT concat_ws(' ', ledger_system_prompt(r), ledger_prompt(r))""",
    "ledger_answer_text(r json)": "SELECT ledger_answer(r)",
}
PG_INDEXES = {
    "ix_requests_search": ("requests", "ledger_request_text(request)"),
    "ix_responses_search": ("responses", "ledger_answer_text(response)"),
}


def _pg_texts(request: str, response: str) -> dict[str, str]:
    return {
        "system_prompt": f"ledger_system_prompt({request})",
        "prompt": f"ledger_prompt({request})",
        "answer": f"ledger_answer({response})",
        "finish_reason": f"ledger_finish_reason({response})",
    }


# --- the views ----------------------------------------------------------------


def _texts(dialect: str, request: str, response: str) -> dict[str, str]:
    if dialect == "sqlite":
        return sqlite_texts(request, response)
    if dialect == "postgresql":
        return _pg_texts(request, response)
    return maria_texts(request, response)


def views(dialect: str) -> dict[str, str]:
    """The two views with their text columns, for one engine.

    ``calls`` reads each text through a scalar subquery, so a query that does not select
    a text column never reads ``requests`` or ``responses`` (the view stays as cheap as
    before for sums and counts).
    """
    by_request = _texts(dialect, "q.request", "r.response")
    request_cols = ", ".join(
        f"(SELECT {by_request[c]} FROM requests q WHERE q.request_hash = l.request_hash) AS {c}"
        for c in ("system_prompt", "prompt")
    )
    response_cols = ", ".join(
        f"(SELECT {by_request[c]} FROM responses r WHERE r.id = l.response_id) AS {c}"
        for c in ("answer", "finish_reason")
    )
    log_cols = ", ".join(f"l.{c.strip()} AS {c.strip()}" for c in CALL_COLUMNS.split(","))
    answers = ", ".join(f"{by_request[c]} AS {c}" for c in TEXT_COLUMNS)
    return {
        "calls": f"SELECT {log_cols}, {request_cols}, {response_cols} FROM call_log l",
        "cached_answers": OLD_VIEWS["cached_answers"].replace(
            " FROM cache_entries c", f", {answers} FROM cache_entries c"
        ),
    }
