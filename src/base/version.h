/* Build identity. BS_VERSION (from the VERSION file) is a compile-time string for
 * every object; the git commit is compiled into version.c alone, which the Makefile
 * rebuilds whenever HEAD moves (it depends on build/git-sha), so all reports agree. */
#ifndef BS_BASE_VERSION_H
#define BS_BASE_VERSION_H

/* Short git commit of the build, or "unknown". */
const char *bs_build_sha(void);

#endif
