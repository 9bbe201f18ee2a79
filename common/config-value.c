/* config-value.c: one setting's value: durations, the API's base URL, HTTP listen addresses. */
#include <arpa/inet.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

int
config_parse_duration(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char buf[32], *end;
	size_t len = strlen(s);
	int64_t mult = 1, v;

	if (len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, s, len + 1);
	end = buf + len - 1;
	switch (*end) {
	case 's': mult = 1; *end = '\0'; break;
	case 'm': mult = 60; *end = '\0'; break;
	case 'h': mult = 3600; *end = '\0'; break;
	case 'd': mult = 86400; *end = '\0'; break;
	default: break;
	}
	if (buf[0] == '+' || buf[0] == '-' || parse_int64(buf, 0, INT32_MAX, &v) != 0)
		return -1;
	v *= mult;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int
url_host_is_loopback(const char *host, size_t len)
{
	if (len == 9 && strncasecmp(host, "localhost", 9) == 0)
		return 1;
	if (len == 5 && strncmp(host, "[::1]", 5) == 0)
		return 1;
	if (len >= 4 && strncmp(host, "127.", 4) == 0) {
		size_t i;

		for (i = 4; i < len; i++) {
			if (!isdigit((unsigned char)host[i]) && host[i] != '.')
				return 0;
		}
		return 1;
	}
	return 0;
}

int
config_check_url(const char *url, char **cause)
{
	const char *host, *p;
	size_t hostlen;
	int plain;

	if (strncmp(url, "https://", 8) == 0) {
		plain = 0;
		host = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		plain = 1;
		host = url + 7;
	} else {
		xasprintf(cause, "base_url must start with https://");
		return -1;
	}
	for (p = url; *p != '\0'; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' ||
		    *p == '#' || *p == '@' || *p == '\\') {
			xasprintf(cause, "base_url may not hold spaces, user info, a query or a "
			    "fragment");
			return -1;
		}
	}
	if (*host == '[')
		hostlen = strcspn(host, "]") + 1;
	else
		hostlen = strcspn(host, ":/");
	if (hostlen == 0 || hostlen > strlen(host)) {
		xasprintf(cause, "base_url has no host");
		return -1;
	}
	if (plain && !url_host_is_loopback(host, hostlen)) {
		xasprintf(cause, "base_url uses plain http:// for a host that is not loopback; "
		    "credentials are only ever sent over https");
		return -1;
	}
	return 0;
}

int
config_parse_listen(const char *s, struct listen_addr *la, char **cause)
{
	unsigned char bin[16];
	const char *colon, *host;
	size_t hostlen;
	int64_t port;

	memset(la, 0, sizeof *la);
	if (strncmp(s, "unix:", 5) == 0) {
		la->kind = LISTEN_UNIX;
		la->loopback = 1;
		if (s[5] != '/' || strlen(s + 5) >= sizeof la->path) {
			xasprintf(cause, "listen = unix:PATH needs an absolute path of at most "
			    "%zu characters", sizeof la->path - 1);
			return -1;
		}
		snprintf(la->path, sizeof la->path, "%s", s + 5);
		return 0;
	}
	la->kind = LISTEN_INET;
	if (*s == '[') {
		host = s + 1;
		if ((colon = strchr(host, ']')) == NULL || colon[1] != ':') {
			xasprintf(cause, "listen: an IPv6 address goes in brackets with a port, "
			    "such as [::1]:8443");
			return -1;
		}
		hostlen = (size_t)(colon - host);
		colon++;
	} else {
		host = s;
		if ((colon = strrchr(s, ':')) == NULL) {
			xasprintf(cause, "listen must be ADDRESS:PORT (127.0.0.1:8787, "
			    "[::1]:8443) or unix:PATH");
			return -1;
		}
		hostlen = (size_t)(colon - host);
	}
	if (hostlen == 0 || hostlen >= sizeof la->host) {
		xasprintf(cause, "listen: no address before the port (use 0.0.0.0 or [::] for "
		    "every address)");
		return -1;
	}
	memcpy(la->host, host, hostlen);
	la->host[hostlen] = '\0';
	if (parse_int64(colon + 1, 1, 65535, &port) != 0) {
		xasprintf(cause, "listen: the port must be a number from 1 to 65535");
		return -1;
	}
	la->port = (int)port;
	if (*s != '[' && inet_pton(AF_INET, la->host, bin) == 1)
		la->loopback = bin[0] == 127;
	else if (*s == '[' && inet_pton(AF_INET6, la->host, bin) == 1) {
		static const unsigned char v6lo[16] = { [15] = 1 };

		la->loopback = memcmp(bin, v6lo, 16) == 0 ||
		    /* ::ffff:127.x.y.z */
		    (memcmp(bin, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 &&
		    bin[12] == 127);
	} else {
		xasprintf(cause, "listen: \"%.*s\" is not a numeric IPv4 address or a "
		    "bracketed IPv6 address", (int)utf8_prefix(la->host, 64), la->host);
		return -1;
	}
	return 0;
}
