/*
 * hello-http: a wasi:http component (world wasi:http/proxy), one instance
 * per request.
 *
 *   GET /        200, "hello from wasi:http\n" (text/plain)
 *   /busy        spins forever without answering (request time-limit tests)
 *   anything     404, "not found\n"
 *   else
 *
 * Every request logs one line on stderr: "hello-http: <METHOD> <PATH>".
 *
 * The bindings (hello_http.h/.c and the component-type object) come from
 * `wit-bindgen c` at build time; see ../../build.sh.
 */
#include <stdio.h>
#include <string.h>

#include "hello_http.h"

static const char *method_name(const wasi_http_types_method_t *m) {
    static const char *names[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                  "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    return m->tag < sizeof names / sizeof names[0] ? names[m->tag] : "OTHER";
}

/* Sends status, a text/plain content type and body, then finishes the body. */
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status, const char *text) {
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    wasi_http_types_field_name_t name;
    hello_http_string_set(&name, "content-type");
    wasi_http_types_field_value_t value = {(uint8_t *)"text/plain", strlen("text/plain")};
    wasi_http_types_header_error_t header_err;
    wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name, &value, &header_err);

    wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_method_outgoing_response_set_status_code(wasi_http_types_borrow_outgoing_response(response), status);
    wasi_http_types_own_outgoing_body_t body;
    if (!wasi_http_types_method_outgoing_response_body(wasi_http_types_borrow_outgoing_response(response), &body))
        return;

    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false, .val = {.ok = response}};
    wasi_http_types_static_response_outparam_set(out, &result);

    wasi_http_types_own_output_stream_t stream;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream)) {
        hello_http_list_u8_t bytes = {(uint8_t *)text, strlen(text)};
        wasi_io_streams_stream_error_t stream_err;
        wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(stream), &bytes, &stream_err);
        /* The stream is a child of the body: drop it before finishing. */
        wasi_io_streams_output_stream_drop_own(stream);
    }
    wasi_http_types_error_code_t finish_err;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err);
}

void exports_wasi_http_incoming_handler_handle(exports_wasi_http_incoming_handler_own_incoming_request_t request,
                                               exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(req, &method);
    hello_http_string_t path_with_query = {0};
    char path[256] = "/";
    if (wasi_http_types_method_incoming_request_path_with_query(req, &path_with_query)) {
        const uint8_t *query = memchr(path_with_query.ptr, '?', path_with_query.len);
        size_t n = query ? (size_t)(query - path_with_query.ptr) : path_with_query.len;
        if (n >= sizeof path)
            n = sizeof path - 1;
        memcpy(path, path_with_query.ptr, n);
        path[n] = '\0';
        hello_http_string_free(&path_with_query);
    }
    fprintf(stderr, "hello-http: %s %s\n", method_name(&method), path);
    fflush(stderr);
    wasi_http_types_method_free(&method);
    wasi_http_types_incoming_request_drop_own(request);

    if (strcmp(path, "/busy") == 0) {
        volatile unsigned long spins = 0;
        for (;;)
            spins++;
    }
    if (strcmp(path, "/") == 0)
        respond(response_out, 200, "hello from wasi:http\n");
    else
        respond(response_out, 404, "not found\n");
}
