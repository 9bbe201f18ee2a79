/* config-file.c: read the config and credentials files (and check the CA and TLS files) safely. */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static const char *
file_kind(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISSOCK(mode))
		return "a socket";
	return "a special file";
}

static void
too_large(const char *what, const char *path, off_t max, char **cause)
{
	if (max % (1024 * 1024) == 0)
		xasprintf(cause, "%s%s: larger than %lld MiB", what, path,
		    (long long)(max / (1024 * 1024)));
	else
		xasprintf(cause, "%s%s: larger than %lld KiB", what, path,
		    (long long)(max / 1024));
}

/*
 * Open one of our input files: a FIFO or a device must not block us (at start, or in
 * the event loop on SIGHUP), so open without blocking, then insist on a regular file of
 * at most max bytes. Returns the descriptor, blocking again, with *sb filled; or -1 with
 * *cause ("WHAT PATH: reason").
 */
static int
config_open(const char *what, const char *path, int flags, off_t max, struct stat *sb,
    char **cause)
{
	int fd, fl;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | flags)) == -1) {
		xasprintf(cause, "%s%s: %s", what, path, strerror(errno));
		return -1;
	}
	if (fstat(fd, sb) != 0) {
		xasprintf(cause, "%s%s: %s", what, path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(sb->st_mode)) {
		xasprintf(cause, "%s%s: not a regular file (%s)", what, path,
		    file_kind(sb->st_mode));
		goto fail;
	}
	if (sb->st_size > max) {
		too_large(what, path, max, cause);
		goto fail;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
		xasprintf(cause, "%s%s: %s", what, path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

int
config_load(struct config *cfg, const char *path, char **cause)
{
	struct stat sb;
	char *buf, *why;
	size_t len = 0;
	ssize_t n;
	int fd, rc;

	free(cfg->path);
	cfg->path = xstrdup(path);
	if ((fd = config_open("", path, 0, CONFIG_MAX_SIZE, &sb, cause)) == -1)
		return -1;
	/* Read it whole, bounded even if it grows under us, then parse from memory. */
	buf = xmalloc(CONFIG_MAX_SIZE + 1);
	while (len <= CONFIG_MAX_SIZE &&
	    (n = read(fd, buf + len, CONFIG_MAX_SIZE + 1 - len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			xasprintf(cause, "%s: %s", path, strerror(errno));
			close(fd);
			free(buf);
			return -1;
		}
		len += (size_t)n;
	}
	close(fd);
	if (len > CONFIG_MAX_SIZE) {
		too_large("", path, CONFIG_MAX_SIZE, cause);
		free(buf);
		return -1;
	}
	rc = config_load_mem(cfg, path, buf, len, cause);
	free(buf);
	if (rc != 0)
		return -1;
	/* libcurl would only find out at the first purge: say so now, naming the file. */
	if (cfg->ca_file != NULL) {
		if ((fd = config_open("ca_file ", cfg->ca_file, 0, CA_FILE_MAX_SIZE, &sb,
		    &why)) == -1) {
			xasprintf(cause, "%s: %s", path, why);
			free(why);
			return -1;
		}
		close(fd);
	}
	/* The TLS files too, when HTTPS will need them (OpenSSL says more at start). */
	if (cfg->http_listen != NULL && cfg->tls_cert != NULL) {
		const char *what[2] = { "tls_cert ", "tls_key " };
		const char *file[2] = { cfg->tls_cert, cfg->tls_key };
		int i;

		for (i = 0; i < 2; i++) {
			if ((fd = config_open(what[i], file[i], 0, CA_FILE_MAX_SIZE, &sb,
			    &why)) == -1) {
				xasprintf(cause, "%s: %s", path, why);
				free(why);
				return -1;
			}
			close(fd);
		}
	}
	return 0;
}

int
config_load_credentials(struct config *cfg, char **cause)
{
	char buf[1024], *path = NULL, *colon, *end;
	const char *dir;
	struct stat sb;
	ssize_t n;
	int fd, rc = -1;

	if (cfg->credentials_file != NULL)
		path = xstrdup(cfg->credentials_file);
	else if ((dir = getenv("CREDENTIALS_DIRECTORY")) != NULL && *dir != '\0')
		xasprintf(&path, "%s/%s", dir, CREDENTIAL_NAME);
	else {
		xasprintf(cause, "no API credentials: set credentials_file in [api], or start "
		    "under systemd with LoadCredential=%s:FILE", CREDENTIAL_NAME);
		return -1;
	}
	if ((fd = config_open("credentials file ", path, O_NOFOLLOW, CREDENTIALS_MAX_SIZE,
	    &sb, cause)) == -1)
		goto out;
	/* systemd's credential directory is already private; elsewhere insist on 0600/0400. */
	if (cfg->credentials_file != NULL && (sb.st_mode & 077) != 0) {
		xasprintf(cause, "credentials file %s is readable by group or others (mode %04o); "
		    "chmod 600 it", path, (unsigned)(sb.st_mode & 07777));
		goto out_close;
	}
	n = read(fd, buf, sizeof buf);
	if (n < 0) {
		xasprintf(cause, "credentials file %s: %s", path, strerror(errno));
		goto out_close;
	}
	if ((size_t)n == sizeof buf) {
		xasprintf(cause, "credentials file %s: longer than one short line", path);
		goto out_close;
	}
	buf[n] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	if (n == 0) {
		xasprintf(cause, "credentials file %s is empty; it must hold one line "
		    "API_USER_ID:API_PASSWORD", path);
		goto out_wipe;
	}
	if (memchr(buf, '\0', (size_t)n) != NULL || strpbrk(buf, "\r\n") != NULL) {
		xasprintf(cause, "credentials file %s must hold exactly one line "
		    "API_USER_ID:API_PASSWORD", path);
		goto out_wipe;
	}
	if ((colon = strchr(buf, ':')) == NULL || colon == buf || colon[1] == '\0') {
		xasprintf(cause, "credentials file %s: expected API_USER_ID:API_PASSWORD", path);
		goto out_wipe;
	}
	end = buf + n;
	if (isspace((unsigned char)buf[0]) || isspace((unsigned char)colon[-1]) ||
	    isspace((unsigned char)colon[1]) || isspace((unsigned char)end[-1])) {
		xasprintf(cause, "credentials file %s: white space around the user id or "
		    "password; remove it", path);
		goto out_wipe;
	}
	*colon = '\0';
	free(cfg->api_user);
	cfg->api_user = xstrdup(buf);
	if (cfg->api_password != NULL)
		explicit_bzero(cfg->api_password, strlen(cfg->api_password));
	free(cfg->api_password);
	cfg->api_password = xstrdup(colon + 1);
	rc = 0;
out_wipe:
	explicit_bzero(buf, sizeof buf);
out_close:
	close(fd);
out:
	free(path);
	return rc;
}
