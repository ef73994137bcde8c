/*
 * frontend: the first tier of the two-tier example, a wasi:http component that
 * answers every request by calling its backend over wasi:http's outgoing handler.
 *
 *   any request   GET $BACKEND_URL with the request's path appended (the URL's own
 *                 path loses its trailing slash first); BACKEND_URL defaults to
 *                 "http://backend/", a Service name the node resolves the way a pod's
 *                 resolver would (namespace first).
 *     answered    200, "frontend got <status> from <url>: <backend body>"
 *     failed      502, "frontend: <url> failed: <wasi:http error code>\n"
 *
 * Every request logs one line on stderr:
 *   "frontend: <METHOD> <PATH> -> <url>: <status or error>".
 *
 * The bindings (frontend.h/.c and the component-type object) come from
 * `wit-bindgen c` at build time; see ../../build.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend.h"

/* The most of the backend's body passed on; the rest is cut. */
#define MAX_BODY 65536

static const char *method_name(const wasi_http_types_method_t *m) {
    static const char *names[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                  "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    return m->tag < sizeof names / sizeof names[0] ? names[m->tag] : "OTHER";
}

/* The error-code variant's case names, in the order of its WIT declaration. */
static const char *error_name(const wasi_http_types_error_code_t *e) {
    static const char *names[] = {
        "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
        "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
        "connection-terminated", "connection-timeout", "connection-read-timeout",
        "connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
        "TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
        "HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
        "HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
        "HTTP-request-header-size", "HTTP-request-trailer-section-size", "HTTP-request-trailer-size",
        "HTTP-response-incomplete", "HTTP-response-header-section-size", "HTTP-response-header-size",
        "HTTP-response-body-size", "HTTP-response-trailer-section-size", "HTTP-response-trailer-size",
        "HTTP-response-transfer-coding", "HTTP-response-content-coding", "HTTP-response-timeout",
        "HTTP-upgrade-failed", "HTTP-protocol-error", "loop-detected", "configuration-error",
        "internal-error"};
    return e->tag < sizeof names / sizeof names[0] ? names[e->tag] : "unknown-error";
}

/* A growing text buffer; on allocation failure it keeps what it had. */
typedef struct {
    char *ptr;
    size_t len, cap;
} text_t;

static void append(text_t *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = realloc(t->ptr, cap);
        if (!p)
            return;
        t->ptr = p;
        t->cap = cap;
    }
    memcpy(t->ptr + t->len, s, n);
    t->len += n;
    t->ptr[t->len] = '\0';
}

static void append_str(text_t *t, const char *s) { append(t, s, strlen(s)); }

/* BACKEND_URL from the environment, or the default; the caller frees it. */
static char *backend_url(void) {
    frontend_list_tuple2_string_string_t env;
    wasi_cli_environment_get_environment(&env);
    char *url = NULL;
    for (size_t i = 0; i < env.len; i++) {
        frontend_string_t *k = &env.ptr[i].f0, *v = &env.ptr[i].f1;
        if (!url && k->len == strlen("BACKEND_URL") && memcmp(k->ptr, "BACKEND_URL", k->len) == 0) {
            url = malloc(v->len + 1);
            if (url) {
                memcpy(url, v->ptr, v->len);
                url[v->len] = '\0';
            }
        }
    }
    frontend_list_tuple2_string_string_free(&env);
    return url ? url : strdup("http://backend/");
}

/* Sends status, a text/plain content type and body, then finishes the body. */
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status, const char *text, size_t len) {
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    wasi_http_types_field_name_t name;
    frontend_string_set(&name, "content-type");
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
        wasi_io_streams_borrow_output_stream_t s = wasi_io_streams_borrow_output_stream(stream);
        wasi_io_streams_stream_error_t stream_err;
        /* blocking-write-and-flush takes at most 4096 bytes a call. */
        for (size_t at = 0; at < len;) {
            size_t n = len - at < 4096 ? len - at : 4096;
            frontend_list_u8_t bytes = {(uint8_t *)text + at, n};
            if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(s, &bytes, &stream_err))
                break;
            at += n;
        }
        /* The stream is a child of the body: drop it before finishing. */
        wasi_io_streams_output_stream_drop_own(stream);
    }
    wasi_http_types_error_code_t finish_err;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err);
}

/* The parts of an http(s)://authority/path URL, pointing into it. */
typedef struct {
    bool https;
    const char *authority, *path;
    size_t authority_len;
} url_t;

static bool parse_url(const char *url, url_t *u) {
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        u->https = false;
        rest = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        u->https = true;
        rest = url + 8;
    } else {
        return false;
    }
    const char *slash = strchr(rest, '/');
    u->authority = rest;
    u->authority_len = slash ? (size_t)(slash - rest) : strlen(rest);
    u->path = slash ? slash : "";
    return u->authority_len > 0;
}

/* GETs `url`; on success sets *status and appends the body to `body`, else sets *err. */
static bool fetch(const url_t *u, const char *path, uint16_t *status, text_t *body, wasi_http_types_error_code_t *err) {
    wasi_http_types_own_outgoing_request_t req = wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(req);
    wasi_http_types_scheme_t scheme = {.tag = u->https ? WASI_HTTP_TYPES_SCHEME_HTTPS : WASI_HTTP_TYPES_SCHEME_HTTP};
    frontend_string_t authority = {(uint8_t *)u->authority, u->authority_len};
    frontend_string_t path_with_query = {(uint8_t *)path, strlen(path)};
    if (!wasi_http_types_method_outgoing_request_set_scheme(r, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(r, &authority) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(r, &path_with_query)) {
        wasi_http_types_outgoing_request_drop_own(req);
        err->tag = WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_URI_INVALID;
        return false;
    }

    wasi_http_outgoing_handler_own_future_incoming_response_t future;
    if (!wasi_http_outgoing_handler_handle(req, NULL, &future, err))
        return false;
    wasi_http_types_borrow_future_incoming_response_t f = wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    while (!wasi_http_types_method_future_incoming_response_get(f, &got)) {
        wasi_io_poll_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(f);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
        wasi_io_poll_pollable_drop_own(ready);
    }
    wasi_http_types_future_incoming_response_drop_own(future);
    if (got.is_err) {
        /* Asked twice: cannot happen after a poll said it was ready. */
        err->tag = WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR;
        err->val.internal_error.is_some = false;
        return false;
    }
    if (got.val.ok.is_err) {
        *err = got.val.ok.val.err;
        return false;
    }
    wasi_http_types_own_incoming_response_t resp = got.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t rb = wasi_http_types_borrow_incoming_response(resp);
    *status = wasi_http_types_method_incoming_response_status(rb);

    wasi_http_types_own_incoming_body_t incoming;
    if (wasi_http_types_method_incoming_response_consume(rb, &incoming)) {
        wasi_http_types_own_input_stream_t stream;
        if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(incoming), &stream)) {
            wasi_io_streams_borrow_input_stream_t s = wasi_io_streams_borrow_input_stream(stream);
            size_t total = 0;
            for (;;) {
                frontend_list_u8_t chunk;
                wasi_io_streams_stream_error_t stream_err;
                /* Ends with an error: `closed` at the end of the body. */
                if (!wasi_io_streams_method_input_stream_blocking_read(s, 16384, &chunk, &stream_err)) {
                    if (stream_err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED)
                        wasi_io_error_error_drop_own(stream_err.val.last_operation_failed);
                    break;
                }
                if (total < MAX_BODY) {
                    size_t n = chunk.len < MAX_BODY - total ? chunk.len : MAX_BODY - total;
                    append(body, (const char *)chunk.ptr, n);
                }
                total += chunk.len;
                frontend_list_u8_free(&chunk);
            }
            /* The stream is a child of the body. */
            wasi_io_streams_input_stream_drop_own(stream);
        }
        wasi_http_types_incoming_body_drop_own(incoming);
    }
    wasi_http_types_incoming_response_drop_own(resp);
    return true;
}

void exports_wasi_http_incoming_handler_handle(exports_wasi_http_incoming_handler_own_incoming_request_t request,
                                               exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(req, &method);
    text_t path = {0};
    frontend_string_t path_with_query;
    if (wasi_http_types_method_incoming_request_path_with_query(req, &path_with_query)) {
        append(&path, (const char *)path_with_query.ptr, path_with_query.len);
        frontend_string_free(&path_with_query);
    }
    if (path.len == 0 || path.ptr[0] != '/')
        append_str(&path, "/");
    wasi_http_types_incoming_request_drop_own(request);

    char *base = backend_url();
    url_t u;
    text_t target = {0}, answer = {0};
    uint16_t status = 0;
    wasi_http_types_error_code_t err;
    bool ok = false;
    if (parse_url(base, &u)) {
        /* base path without its trailing slash, then the request's path */
        size_t base_path = strlen(u.path);
        if (base_path > 0 && u.path[base_path - 1] == '/')
            base_path--;
        text_t full_path = {0};
        append(&full_path, u.path, base_path);
        append_str(&full_path, path.ptr);
        append(&target, base, (size_t)(u.path - base));
        append_str(&target, full_path.ptr);
        text_t body = {0};
        ok = fetch(&u, full_path.ptr, &status, &body, &err);
        if (ok) {
            char head[64];
            snprintf(head, sizeof head, "frontend got %u from ", status);
            append_str(&answer, head);
            append_str(&answer, target.ptr);
            append_str(&answer, ": ");
            if (body.len)
                append(&answer, body.ptr, body.len);
        }
        free(body.ptr);
        free(full_path.ptr);
    } else {
        append_str(&target, base);
        err.tag = WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_URI_INVALID;
    }

    if (ok) {
        fprintf(stderr, "frontend: %s %s -> %s: %u\n", method_name(&method), path.ptr, target.ptr, status);
        respond(response_out, 200, answer.ptr, answer.len);
    } else {
        fprintf(stderr, "frontend: %s %s -> %s: %s\n", method_name(&method), path.ptr, target.ptr, error_name(&err));
        append_str(&answer, "frontend: ");
        append_str(&answer, target.ptr);
        append_str(&answer, " failed: ");
        append_str(&answer, error_name(&err));
        append_str(&answer, "\n");
        respond(response_out, 502, answer.ptr, answer.len);
    }
    fflush(stderr);
    wasi_http_types_method_free(&method);
    free(base);
    free(path.ptr);
    free(target.ptr);
    free(answer.ptr);
}
