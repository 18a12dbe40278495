/*
 * Tasks written in C against guest ABI v1, through asyncer.h. The tests
 * build this file with Debian's clang and wasi-libc and run it beside the
 * Rust guests: the same inputs give the same outputs.
 */
#include <ctype.h>
#include <stdio.h>

#include "asyncer.h"

/* (a: u64, b: u64) -> u64, like the faults guest's `add`. */
ASYNCER_TASK("add") add(int32_t ptr, int32_t len) {
    asyncer_reader in = asyncer_input(ptr, len);
    uint64_t a, b;
    if (!asyncer_read_u64(&in, &a) || !asyncer_read_u64(&in, &b) || !asyncer_read_done(&in))
        return asyncer_decode_error("expected two u64 varints");
    asyncer_writer out = asyncer_output();
    asyncer_write_u64(&out, a + b);
    return asyncer_ok(&out);
}

/* n: u64 -> the sum of i * i for i < n, a u128, like the heavy guest's
 * `sum_squares`; reports progress every 2^20 steps. */
ASYNCER_TASK("sum_squares") sum_squares(int32_t ptr, int32_t len) {
    asyncer_reader in = asyncer_input(ptr, len);
    uint64_t n;
    if (!asyncer_read_u64(&in, &n) || !asyncer_read_done(&in))
        return asyncer_decode_error("expected a u64 varint");
    unsigned __int128 sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        sum += (unsigned __int128)i * i;
        if ((i & 0xfffff) == 0xfffff) asyncer_progress(i + 1, n, "squaring");
    }
    asyncer_writer out = asyncer_output();
    asyncer_write_u128(&out, sum);
    return asyncer_ok(&out);
}

/* text: String -> the same in upper case; logs and prints what it does. */
ASYNCER_TASK("shout") shout(int32_t ptr, int32_t len) {
    asyncer_reader in = asyncer_input(ptr, len);
    const uint8_t *text;
    size_t n;
    if (!asyncer_read_bytes(&in, &text, &n) || !asyncer_read_done(&in))
        return asyncer_decode_error("expected a string");
    char *upper = malloc(n + 1);
    for (size_t i = 0; i < n; i++) upper[i] = (char)toupper(text[i]);
    upper[n] = '\0';
    asyncer_log(ASYNCER_INFO, "shouting");
    printf("shouting %zu bytes\n", n);
    fflush(stdout);
    asyncer_writer out = asyncer_output();
    asyncer_write_bytes(&out, upper, n);
    return asyncer_ok(&out);
}

/* () -> always the guest error "C says no". */
ASYNCER_TASK("refuse") refuse(int32_t ptr, int32_t len) {
    (void)ptr;
    (void)len;
    return asyncer_error("C says no");
}
