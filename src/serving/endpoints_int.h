/* Private to src/serving/endpoints.c and its unit test. */
#ifndef BS_SERVING_ENDPOINTS_INT_H
#define BS_SERVING_ENDPOINTS_INT_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of data under the 128-bit key (k0, k1) (Aumasson & Bernstein, 2012): the
 * sticky hash. */
uint64_t bs__endpoints_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len);

#endif
