/* utf8.h: a strict UTF-8 check for the unit tests (no overlongs, surrogates or stray bytes). */
#ifndef WPE_TEST_UTF8_H
#define WPE_TEST_UTF8_H

#include <string.h>

static int
utf8_strict(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned int c, need, i;

	while ((c = *p++) != '\0') {
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3;
		else
			return 0;
		if ((c == 0xe0 && p[0] < 0xa0) || (c == 0xed && p[0] > 0x9f) ||
		    (c == 0xf0 && p[0] < 0x90) || (c == 0xf4 && p[0] > 0x8f))
			return 0;
		for (i = 0; i < need; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
		}
		p += need;
	}
	return 1;
}

#endif
