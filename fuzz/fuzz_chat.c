/* fuzz_chat — libFuzzer harness for what `rlm serve` and `rlm mcp` read from
 * their clients: any bytes as a chat completions request body (and, when it
 * parses, every reply built from it), and as one MCP message line. */
#include "chat.h"
#include "mcp_proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    chat_request req;
    chat_error err;
    if (chat_parse(body, size, &req, &err) == 0) {
        /* The replies echo parts of the request (model, ignored names):
         * build them all, with and without an answer. */
        chat_outcome o = {.id = "chatcmpl-fuzz", .model = req.model, .created = 1,
                          .answer = req.question, .answer_len = strlen(req.question),
                          .report = "{\"how\":\"code\",\"iterations\":1}", .status = "ok",
                          .conversation = req.conversation, .req = &req, .warnings = "w\n"};
        char *pieces[] = {chat_completion_body(&o), chat_chunk_role(&o), chat_chunk_content(&o),
                          chat_chunk_finish(&o), chat_chunk_usage(&o),
                          chat_chunk_event(&o, "{\"type\":\"x\"}")};
        for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++)
            free(pieces[i]);
        o.answer = NULL;
        o.status = "no answer";
        o.error = "stopped";
        free(chat_completion_body(&o));
        chat_request_clear(&req);
    } else {
        free(chat_error_body(&err));
        free(chat_chunk_error(&err));
    }
    mcp_message m;
    mcp_parse(body, size, &m);
    if (m.kind == MCP_REQUEST && m.method && strcmp(m.method, "initialize") == 0)
        (void)mcp_negotiate(m.params);
    if (m.kind == MCP_REQUEST && m.params) {
        mcp_call call;
        int tool_error = 0;
        char why[256];
        if (mcp_call_parse(m.params, &call, &tool_error, why, sizeof why) == 0 && call.question)
            json_decref(mcp_tool_result(call.question, strlen(call.question), NULL, 0));
    }
    free(mcp_error(m.id, m.error_code ? m.error_code : -32603, m.error));
    mcp_message_clear(&m);
    return 0;
}
