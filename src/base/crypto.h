/* Hashing, randomness and constant-time comparison (OpenSSL libcrypto). */
#ifndef BS_BASE_CRYPTO_H
#define BS_BASE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/* SHA-256 of data as 64 lowercase hex chars + NUL into out[65]. */
void bs_sha256_hex(const void *data, size_t len, char out[65]);
/* SHA-256 over two pieces (salt || secret). */
void bs_sha256_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[65]);
/* Cryptographically secure random bytes (getrandom). 0 or BS_EIO. */
int bs_random_bytes(void *buf, size_t n);
/* Lowercase hex of n random bytes into out (2n+1 bytes). */
int bs_random_hex(char *out, size_t nbytes);
/* 1 if equal; time depends only on n. */
int bs_ct_equal(const void *a, const void *b, size_t n);
void bs_hex_encode(const unsigned char *in, size_t n, char *out);
/* The value of one hex digit (either case), or -1 if c is not one. */
int bs_hex_digit(int c);

#endif
