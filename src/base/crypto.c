/* See crypto.h. SHA-256 via OpenSSL's one-shot EVP_Digest. */
#include "base/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
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

void bs_sha256_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, a, alen);
    if (blen)
        EVP_DigestUpdate(ctx, b, blen);
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
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
