/*
 * erofs.c: LD_PRELOAD fault injector: while the file named by $WPE_EROFS_FLAG exists,
 * writes to files whose path contains $WPE_EROFS_MATCH fail with EROFS, as they would on
 * a file system remounted read-only under a running process; while $WPE_EIO_FLAG exists,
 * fdatasync of such files fails with EIO (a disk losing writes); while $WPE_KILL_FLAG
 * exists, fdatasync of such files kills the process with SIGKILL (kill -9 after a commit
 * was written, before it was answered: its frames are in the page cache, not lost).
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ssize_t write(int, const void *, size_t);
ssize_t pwrite(int, const void *, size_t, off_t);
ssize_t pwrite64(int, const void *, size_t, off_t);
int ftruncate(int, off_t);
int ftruncate64(int, off_t);

int fdatasync(int);

static int
refuse_with(int fd, const char *flagvar, int err)
{
	const char *flag = getenv(flagvar), *match = getenv("WPE_EROFS_MATCH");
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
	errno = err;
	return 1;
}

static int
refuse(int fd)
{
	return refuse_with(fd, "WPE_EROFS_FLAG", EROFS);
}

int
fdatasync(int fd)
{
	static int (*real)(int);

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "fdatasync");
	if (refuse_with(fd, "WPE_KILL_FLAG", EINTR))
		raise(SIGKILL);
	if (refuse_with(fd, "WPE_EIO_FLAG", EIO))
		return -1;
	return real(fd);
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
