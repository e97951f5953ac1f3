/* See version.h. */
#include "base/version.h"

#ifndef BS_GIT_SHA
#define BS_GIT_SHA "unknown"
#endif

const char *bs_build_sha(void) { return BS_GIT_SHA; }
