/* mcp_proto — the Model Context Protocol as `rlm mcp` speaks it, without the
 * I/O: a line of JSON-RPC 2.0 read into a message, the replies built (the
 * initialize result, the tool list, results and errors, progress), and the
 * tools' arguments checked. Pure; fuzzed (fuzz/fuzz_mcp.c). The revision
 * spoken is the one the official TypeScript SDK calls latest (2025-11-25);
 * a client asking for an earlier one the SDK supports gets that one.
 *
 * Ownership: mcp_parse fills an mcp_message holding a reference to the
 * parsed JSON (released by mcp_message_clear); its pointers borrow from it.
 * Functions returning char * return a malloc'd line (JSON and a newline)
 * the caller frees; NULL only when out of memory. */
#ifndef RLM_SERVE_MCP_PROTO_H
#define RLM_SERVE_MCP_PROTO_H

#include <jansson.h>
#include <stddef.h>

#define MCP_PROTOCOL_LATEST "2025-11-25"
/* Deepest nesting a message may have. */
#define MCP_MAX_DEPTH 32
/* Most paths one call may name. */
#define MCP_MAX_PATHS 1000

/* JSON-RPC error codes. */
enum {
    MCP_PARSE_ERROR = -32700,
    MCP_INVALID_REQUEST = -32600,
    MCP_METHOD_NOT_FOUND = -32601,
    MCP_INVALID_PARAMS = -32602,
    MCP_INTERNAL_ERROR = -32603,
};

typedef enum mcp_kind {
    MCP_REQUEST,               /* method and id */
    MCP_NOTIFICATION,          /* method, no id */
    MCP_RESPONSE,              /* an answer to a request of ours (we send none: ignored) */
    MCP_INVALID,               /* error_code and error say why; id when one could be read */
} mcp_kind;

typedef struct mcp_message {
    mcp_kind kind;
    json_t *root;
    const json_t *id;          /* a string or an integer, or NULL */
    const char *method;
    const json_t *params;      /* an object, or NULL */
    int error_code;
    char error[256];
} mcp_message;

/* Reads one line (without its newline). Always fills *m. */
void mcp_parse(const char *line, size_t len, mcp_message *m);
void mcp_message_clear(mcp_message *m);

/* The protocol revision to answer an initialize with: the client's when it
 * is one we speak, else ours. */
const char *mcp_negotiate(const json_t *params);

/* {"jsonrpc": "2.0", "id": id, "result": result} (steals result). */
char *mcp_result(const json_t *id, json_t *result);
/* {"jsonrpc": "2.0", "id": id (null when NULL), "error": {"code", "message"}} */
char *mcp_error(const json_t *id, int code, const char *message);
/* notifications/progress for token: progress (increasing), message. */
char *mcp_progress(const json_t *token, double progress, const char *message);

/* The initialize result: version, capabilities (tools), serverInfo,
 * instructions naming the roots. */
json_t *mcp_initialize_result(const char *version, const char *server_version, const char *roots);
/* The tools/list result: rlm_ask and rlm_describe, with input and output
 * schemas. */
json_t *mcp_tools(void);

/* A tool call's arguments, checked. */
typedef struct mcp_call {
    const char *tool;          /* "rlm_ask" or "rlm_describe" */
    const char *question;      /* rlm_ask */
    const char *paths[MCP_MAX_PATHS];
    size_t n_paths;
    double max_cost, max_time; /* < 0: not asked */
    long max_subcalls;
} mcp_call;

/* Fills *call from tools/call params (borrowing from them). 0, or -1 with
 * why (an unknown tool is MCP_INVALID_PARAMS for the protocol; bad
 * arguments come back as a tool error, *tool_error set). */
int mcp_call_parse(const json_t *params, mcp_call *call, int *tool_error, char *why, size_t whylen);

/* A tool's result: content (the text) and structuredContent; is_error
 * marks a tool error (the text says why). Steals structured. */
json_t *mcp_tool_result(const char *text, size_t len, json_t *structured, int is_error);

#endif
