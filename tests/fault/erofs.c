/*
 * erofs.c: LD_PRELOAD fault injector: while the file named by $WPE_EROFS_FLAG exists,
 * writes to files whose path contains $WPE_EROFS_MATCH fail with EROFS, as they would on
 * a file system remounted read-only under a running process.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ssize_t write(int, const void *, size_t);
ssize_t pwrite(int, const void *, size_t, off_t);
ssize_t pwrite64(int, const void *, size_t, off_t);
int ftruncate(int, off_t);
int ftruncate64(int, off_t);

static int
refuse(int fd)
{
	const char *flag = getenv("WPE_EROFS_FLAG"), *match = getenv("WPE_EROFS_MATCH");
	char link[64], path[4096];
	struct stat sb;
	ssize_t n;

	if (flag == NULL || match == NULL || stat(flag, &sb) != 0)
		return 0;
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, sizeof path - 1)) <= 0)
		return 0;
	path[n] = '\0';
	if (strstr(path, match) == NULL)
		return 0;
	errno = EROFS;
	return 1;
}

#define WRAP(ret, name, params, args, fd)                                  \
	ret name params                                                    \
	{                                                                  \
		static ret (*real) params;                                 \
		if (real == NULL)                                          \
			*(void **)&real = dlsym(RTLD_NEXT, #name);         \
		if (refuse(fd))                                            \
			return -1;                                         \
		return real args;                                          \
	}

WRAP(ssize_t, write, (int fd, const void *b, size_t n), (fd, b, n), fd)
WRAP(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o), fd)
WRAP(ssize_t, pwrite64, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o), fd)
WRAP(int, ftruncate, (int fd, off_t o), (fd, o), fd)
WRAP(int, ftruncate64, (int fd, off_t o), (fd, o), fd)
