/* Shared includes for the cmocka unit tests (cmocka needs these before <cmocka.h>). */
#ifndef BS_TEST_COMMON_H
#define BS_TEST_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#endif
