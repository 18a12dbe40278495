/*
 * asyncer.h: write asyncer tasks in C (clang + wasi-libc, wasm32-wasip1).
 *
 * Guest ABI v1 (host/protocol/ABI.md) in one header: the exports a module
 * needs, the result envelope, postcard's varints for inputs and outputs, and
 * the host's `asyncer` imports (progress and log records).
 *
 *     #include "asyncer.h"
 *
 *     ASYNCER_TASK("add") (int32_t ptr, int32_t len) {
 *         asyncer_reader in = asyncer_input(ptr, len);
 *         uint64_t a, b;
 *         if (!asyncer_read_u64(&in, &a) || !asyncer_read_u64(&in, &b))
 *             return asyncer_decode_error("expected two u64");
 *         asyncer_writer out = asyncer_output();
 *         asyncer_write_u64(&out, a + b);
 *         return asyncer_ok(&out);
 *     }
 *
 * Build (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32):
 *
 *     clang --target=wasm32-wasi -O2 -mexec-model=reactor -s -o tasks.wasm tasks.c
 *
 * `-mexec-model=reactor` makes a library module (exports `_initialize`,
 * which the host calls once before the task) instead of a program with
 * `main`. Every task runs in a fresh instance, so memory handed out by
 * `malloc` never needs to be freed.
 */
#ifndef ASYNCER_H
#define ASYNCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Exports task NAME (a string literal) as `task:NAME`; the function takes
 * (int32_t input_ptr, int32_t input_len) and returns int64_t. */
#define ASYNCER_TASK(name) __attribute__((export_name("task:" name))) int64_t

#define ASYNCER_IMPORT(name) __attribute__((import_module("asyncer"), import_name(name)))

/* The host's imports (optional: a module that calls neither imports neither). */
ASYNCER_IMPORT("progress")
void asyncer_progress_raw(int64_t done, int64_t total, const char *msg, int32_t msg_len);
ASYNCER_IMPORT("log")
void asyncer_log_raw(int32_t level, const char *msg, int32_t msg_len);

/* Log levels of asyncer_log. */
enum { ASYNCER_TRACE = 0, ASYNCER_DEBUG = 1, ASYNCER_INFO = 2, ASYNCER_WARN = 3, ASYNCER_ERROR = 4 };

/* Reports that `done` of `total` units are done (total 0: unknown). */
static inline void asyncer_progress(uint64_t done, uint64_t total, const char *msg) {
    asyncer_progress_raw((int64_t)done, (int64_t)total, msg, (int32_t)strlen(msg));
}

/* Sends one log record to the host at `level`. */
static inline void asyncer_log(int32_t level, const char *msg) {
    asyncer_log_raw(level, msg, (int32_t)strlen(msg));
}

/* Room for a task's input: the host writes the input there. Weak, so that
 * several files may include this header. */
__attribute__((weak, export_name("asyncer_alloc"))) int32_t asyncer_alloc(int32_t len) {
    return (int32_t)(uintptr_t)malloc(len > 0 ? (size_t)len : 1);
}

/* ---- reading the input (postcard) ---- */

typedef struct {
    const uint8_t *at;
    const uint8_t *end;
} asyncer_reader;

/* A reader over the task's input. */
static inline asyncer_reader asyncer_input(int32_t ptr, int32_t len) {
    const uint8_t *at = (const uint8_t *)(uintptr_t)ptr;
    asyncer_reader r = {at, at + len};
    return r;
}

/* Whether every input byte was read (a longer input is a decode error). */
static inline bool asyncer_read_done(const asyncer_reader *r) { return r->at == r->end; }

/* An unsigned varint (u16, u32, u64, usize; also lengths). */
static inline bool asyncer_read_u64(asyncer_reader *r, uint64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->at == r->end) return false;
        uint8_t byte = *r->at++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return true;
        }
    }
    return false;
}

/* A signed varint (i16, i32, i64): zigzag-encoded. */
static inline bool asyncer_read_i64(asyncer_reader *r, int64_t *out) {
    uint64_t raw;
    if (!asyncer_read_u64(r, &raw)) return false;
    *out = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
    return true;
}

/* A byte string or String: a varint length, then the bytes (not copied, not
 * NUL-terminated). */
static inline bool asyncer_read_bytes(asyncer_reader *r, const uint8_t **bytes, size_t *len) {
    uint64_t n;
    if (!asyncer_read_u64(r, &n) || n > (uint64_t)(r->end - r->at)) return false;
    *bytes = r->at;
    *len = (size_t)n;
    r->at += n;
    return true;
}

/* ---- writing the output (postcard) ---- */

typedef struct {
    uint8_t *buf; /* buf[0] is the envelope's tag */
    size_t len;
    size_t cap;
} asyncer_writer;

/* An empty output. */
static inline asyncer_writer asyncer_output(void) {
    asyncer_writer w = {malloc(64), 1, 64};
    w.buf[0] = 0x00;
    return w;
}

static inline void asyncer_write_raw(asyncer_writer *w, const void *bytes, size_t len) {
    if (w->len + len > w->cap) {
        while (w->len + len > w->cap) w->cap *= 2;
        w->buf = realloc(w->buf, w->cap);
    }
    memcpy(w->buf + w->len, bytes, len);
    w->len += len;
}

/* An unsigned varint of up to 128 bits (u16, u32, u64, usize and u128,
 * clang's unsigned __int128): at most 19 bytes. */
static inline void asyncer_write_u128(asyncer_writer *w, unsigned __int128 value) {
    uint8_t bytes[19];
    size_t n = 0;
    do {
        uint8_t byte = value & 0x7f;
        value >>= 7;
        bytes[n++] = byte | (value ? 0x80 : 0);
    } while (value);
    asyncer_write_raw(w, bytes, n);
}

static inline void asyncer_write_u64(asyncer_writer *w, uint64_t value) {
    asyncer_write_u128(w, value);
}

static inline void asyncer_write_i64(asyncer_writer *w, int64_t value) {
    asyncer_write_u64(w, ((uint64_t)value << 1) ^ (uint64_t)(value >> 63));
}

static inline void asyncer_write_bytes(asyncer_writer *w, const void *bytes, size_t len) {
    asyncer_write_u64(w, len);
    asyncer_write_raw(w, bytes, len);
}

static inline void asyncer_write_str(asyncer_writer *w, const char *text) {
    asyncer_write_bytes(w, text, strlen(text));
}

/* ---- results ---- */

static inline int64_t asyncer_envelope(const asyncer_writer *w) {
    return (int64_t)((uint64_t)(uintptr_t)w->buf << 32 | (uint64_t)w->len);
}

/* Success: the output written to `w`. */
static inline int64_t asyncer_ok(asyncer_writer *w) {
    w->buf[0] = 0x00;
    return asyncer_envelope(w);
}

static inline int64_t asyncer_message(uint8_t tag, const char *message) {
    asyncer_writer w = asyncer_output();
    w.buf[0] = tag;
    asyncer_write_str(&w, message);
    return asyncer_envelope(&w);
}

/* The task failed: the caller gets `guest_error` with this message. */
static inline int64_t asyncer_error(const char *message) { return asyncer_message(0x01, message); }

/* The input does not decode: the caller gets `decode` with this message. */
static inline int64_t asyncer_decode_error(const char *message) {
    return asyncer_message(0x02, message);
}

#endif /* ASYNCER_H */
