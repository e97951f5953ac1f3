/* See crypto.h. SHA-256 via OpenSSL's EVP interface. */
#include "base/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/random.h>

#include "base/err.h"

void bs_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* OpenSSL 3 looks EVP_sha256() up in its provider tables on every EVP_DigestInit_ex, and
 * a context costs an allocation: about as much as hashing an API key itself, on every
 * authenticated request. The digest is fetched once per process and each thread keeps
 * one context (a hash never suspends, so it is never in use twice on a thread); a
 * failure to get either falls back to the one-shot calls. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

static _Thread_local EVP_MD_CTX *thread_ctx;
static pthread_key_t ctx_key;
static pthread_once_t ctx_key_once = PTHREAD_ONCE_INIT;
static void ctx_free(void *ctx) { EVP_MD_CTX_free(ctx); }
static void ctx_key_create(void) { pthread_key_create(&ctx_key, ctx_free); }

void bs_sha256_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    pthread_once(&sha256_once, sha256_fetch);
    EVP_MD_CTX *ctx = thread_ctx;
    if (!ctx && sha256_md && (ctx = EVP_MD_CTX_new())) {
        pthread_once(&ctx_key_once, ctx_key_create);
        pthread_setspecific(ctx_key, ctx); /* freed when the thread exits */
        thread_ctx = ctx;
    }
    if (ctx && EVP_DigestInit_ex2(ctx, sha256_md, NULL) == 1) {
        EVP_DigestUpdate(ctx, a, alen);
        if (blen)
            EVP_DigestUpdate(ctx, b, blen);
        EVP_DigestFinal_ex(ctx, md, &mdlen);
    } else {
        EVP_MD_CTX *one = EVP_MD_CTX_new();
        EVP_DigestInit_ex(one, EVP_sha256(), NULL);
        EVP_DigestUpdate(one, a, alen);
        if (blen)
            EVP_DigestUpdate(one, b, blen);
        EVP_DigestFinal_ex(one, md, &mdlen);
        EVP_MD_CTX_free(one);
    }
    bs_hex_encode(md, 32, out);
}

void bs_sha256_hex(const void *data, size_t len, char out[65])
{
    bs_sha256_hex2(data, len, NULL, 0, out);
}

int bs_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r <= 0)
            return BS_EIO;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int bs_random_hex(char *out, size_t nbytes)
{
    unsigned char tmp[64];
    if (nbytes > sizeof tmp)
        return BS_EINVAL;
    int rc = bs_random_bytes(tmp, nbytes);
    if (rc)
        return rc;
    bs_hex_encode(tmp, nbytes, out);
    return 0;
}

int bs_ct_equal(const void *a, const void *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

int bs_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
