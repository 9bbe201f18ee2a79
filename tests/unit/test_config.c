/* test_config.c: configuration parsing, validation and credentials loading. */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "tmpdir.h"
#include "utf8.h"


static const char *
write_file(const char *name, const char *text, mode_t mode)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
	return path;
}

/* Load text as a config; return the error text (caller frees) or NULL on success. */
static char *
load(const char *text, struct config *cfg)
{
	char *cause = NULL;

	config_defaults(cfg);
	if (config_load(cfg, write_file("c.conf", text, 0644), &cause) == 0)
		return NULL;
	return cause;
}

static void
expect_error(const char *text, const char *fragment)
{
	struct config cfg;
	char *cause = load(text, &cfg);

	assert_non_null(cause);
	if (strstr(cause, fragment) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", cause, fragment);
	free(cause);
	config_free(&cfg);
}

static void
test_defaults(void **state)
{
	struct config cfg;

	(void)state;
	assert_null(load("# nothing but comments\n; here\n", &cfg));
	assert_string_equal(cfg.socket, "/run/wpe-purged/wpe-purged.sock");
	assert_int_equal(cfg.socket_mode, 0660);
	assert_string_equal(cfg.database, "/var/lib/wpe-purged/queue.sqlite");
	assert_string_equal(cfg.base_url, "https://api.wpengineapi.com/v1");
	assert_null(cfg.credentials_file);
	assert_int_equal(cfg.max_in_flight, 4);
	assert_int_equal(cfg.timeout, 30);
	assert_int_equal(cfg.limits.interval[CLASS_OBJECT], 60);
	assert_int_equal(cfg.limits.interval[CLASS_PAGE], 0);
	assert_int_equal(cfg.limits.interval[CLASS_CDN], 0);
	assert_int_equal(cfg.limits.retry_initial, 5);
	assert_int_equal(cfg.limits.retry_max, 900);
	assert_int_equal(cfg.retention, 7 * 86400);
	config_free(&cfg);
}

static void
test_values(void **state)
{
	struct config cfg;

	(void)state;
	assert_null(load("[daemon]\nsocket = /tmp/x.sock\nsocket_mode = 0600\n"
	    "retention = 2d\nlog_level = debug\n"
	    "[api]\nbase_url = http://127.0.0.1:8080/v1/\nmax_in_flight = 8\ntimeout = 2m\n"
	    "[limits]\nobject_interval = 90\npage_interval = 5s\nretry_max = 1h\n", &cfg));
	assert_string_equal(cfg.socket, "/tmp/x.sock");
	assert_int_equal(cfg.socket_mode, 0600);
	assert_int_equal(cfg.retention, 2 * 86400);
	assert_int_equal(cfg.log_level, LOG_DEBUG);
	assert_string_equal(cfg.base_url, "http://127.0.0.1:8080/v1"); /* slash trimmed */
	assert_int_equal(cfg.max_in_flight, 8);
	assert_int_equal(cfg.timeout, 120);
	assert_int_equal(cfg.limits.interval[CLASS_OBJECT], 90);
	assert_int_equal(cfg.limits.interval[CLASS_PAGE], 5);
	assert_int_equal(cfg.limits.retry_max, 3600);
	config_free(&cfg);
}

static void
test_errors(void **state)
{
	(void)state;
	expect_error("[daemon]\nsocket = /a\n[nope]\nkey = 1\n", "c.conf:4: unknown section [nope]");
	expect_error("[api]\n\nbase_uri = https://x\n", "c.conf:3: unknown key \"base_uri\"");
	expect_error("[api]\nmax_in_flight = 0\n", ":2: max_in_flight must be a whole number");
	expect_error("[api]\nmax_in_flight = 65\n", ":2:");
	expect_error("[api]\nmax_in_flight = 4x\n", ":2:");
	expect_error("[api]\ntimeout = -1\n", ":2: timeout must be a duration");
	expect_error("[limits]\nobject_interval = 1w\n", ":2:");
	expect_error("[limits]\nobject_interval = 99999999999999999999\n", ":2:");
	expect_error("[daemon]\nsocket_mode = 999\n", "octal mode");
	expect_error("[daemon]\nsocket = relative.sock\n", "absolute path");
	expect_error("[daemon]\nlog_level = loud\n", "log_level must be");
	expect_error("[api]\nbase_url = http://api.wpengineapi.com/v1\n", "not loopback");
	expect_error("[api]\nbase_url = ftp://x/v1\n", "https://");
	expect_error("[api]\nbase_url = https://user:pw@x/v1\n", "user info");
	expect_error("[api]\ntimeout = 5\ntimeout = 6\n", ":3: timeout is set twice");
	expect_error("[limits]\nretry_initial = 60\nretry_max = 10\n", "retry_max");
	expect_error("[daemon]\nthis line has no equals sign\n", ":2: syntax error");
	expect_error("key_before_section = 1\n", ":1: unknown section");
}

static void
test_missing_file(void **state)
{
	struct config cfg;
	char *cause = NULL;

	(void)state;
	config_defaults(&cfg);
	assert_int_equal(config_load(&cfg, "/nonexistent/wpe.conf", &cause), -1);
	assert_non_null(strstr(cause, "/nonexistent/wpe.conf"));
	free(cause);
	config_free(&cfg);
}

static char *
creds(const char *text, mode_t mode, struct config *cfg)
{
	char *cause = NULL;

	config_defaults(cfg);
	cfg->credentials_file = strdup(write_file("credentials", text, mode));
	if (config_load_credentials(cfg, &cause) == 0)
		return NULL;
	return cause;
}

static void
expect_cred_error(const char *text, mode_t mode, const char *fragment)
{
	struct config cfg;
	char *cause = creds(text, mode, &cfg);

	assert_non_null(cause);
	if (strstr(cause, fragment) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", cause, fragment);
	/* The password never appears in an error. */
	assert_null(strstr(cause, "s3cret"));
	free(cause);
	config_free(&cfg);
}

static void
test_credentials(void **state)
{
	struct config cfg;

	(void)state;
	assert_null(creds("user-id:s3cret:with:colons\n", 0600, &cfg));
	assert_string_equal(cfg.api_user, "user-id");
	assert_string_equal(cfg.api_password, "s3cret:with:colons");
	config_free(&cfg);
	assert_null(creds("u:s3cret\r\n", 0400, &cfg)); /* CRLF accepted */
	assert_string_equal(cfg.api_password, "s3cret");
	config_free(&cfg);
	assert_null(creds("u:s3cret", 0600, &cfg)); /* no final newline */
	config_free(&cfg);

	expect_cred_error("u:s3cret\n", 0640, "readable by group or others");
	expect_cred_error("u:s3cret\n", 0604, "chmod 600");
	expect_cred_error("", 0600, "empty");
	expect_cred_error("\n", 0600, "empty");
	expect_cred_error("nocolon\n", 0600, "API_USER_ID:API_PASSWORD");
	expect_cred_error(":s3cret\n", 0600, "API_USER_ID:API_PASSWORD");
	expect_cred_error("u:\n", 0600, "API_USER_ID:API_PASSWORD");
	expect_cred_error("u: s3cret\n", 0600, "white space");
	expect_cred_error("u:s3cret \n", 0600, "white space");
	expect_cred_error(" u:s3cret\n", 0600, "white space");
	expect_cred_error("u:s3cret\nu2:other\n", 0600, "exactly one line");
}

static void
test_credentials_directory(void **state)
{
	struct config cfg;
	char *cause = NULL;

	(void)state;
	config_defaults(&cfg);
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_int_equal(config_load_credentials(&cfg, &cause), -1);
	assert_non_null(strstr(cause, "LoadCredential"));
	free(cause);
	/* systemd's directory: the file name is the credential's. */
	write_file(CREDENTIAL_NAME, "sysd:s3cret\n", 0440);
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	assert_int_equal(config_load_credentials(&cfg, &cause), 0);
	assert_string_equal(cfg.api_user, "sysd");
	unsetenv("CREDENTIALS_DIRECTORY");
	config_free(&cfg);
}

static void
test_print_redacts(void **state)
{
	struct config cfg;
	char buf[4096];
	FILE *f;
	size_t n;

	(void)state;
	assert_null(creds("u:s3cret\n", 0600, &cfg));
	f = fmemopen(buf, sizeof buf, "w");
	config_print(&cfg, f);
	fclose(f);
	n = strlen(buf);
	assert_true(n > 100);
	assert_null(strstr(buf, "s3cret"));
	assert_non_null(strstr(buf, "redacted"));
	assert_non_null(strstr(buf, "object_interval = 60s"));
	config_free(&cfg);
}

/* Error texts quote a bounded prefix of a name: cut on a character boundary. */
static void
test_error_text_is_utf8(void **state)
{
	struct config cfg;
	char text[256], pad[80], *cause;
	size_t n;

	(void)state;
	for (n = 50; n < 70; n++) {
		memset(pad, 'k', n);
		pad[n] = '\0';
		snprintf(text, sizeof text, "[api]\n%s\xe2\x82\xac = 1\n", pad);
		cause = load(text, &cfg);
		assert_non_null(cause);
		if (!utf8_strict(cause))
			fail_msg("not UTF-8: %s", cause);
		free(cause);
		config_free(&cfg);
		snprintf(text, sizeof text, "[%s\xf0\x9f\x98\x80]\nx = 1\n", pad);
		cause = load(text, &cfg);
		assert_non_null(cause);
		if (!utf8_strict(cause))
			fail_msg("not UTF-8: %s", cause);
		free(cause);
		config_free(&cfg);
		snprintf(text, sizeof text, "[daemon]\nallow_users = %s\xc3\xa9\n", pad);
		cause = load(text, &cfg);
		assert_non_null(cause);
		if (!utf8_strict(cause))
			fail_msg("not UTF-8: %s", cause);
		free(cause);
		config_free(&cfg);
	}
}

/* config_load(path) must fail at once with an error naming path and holding fragment. */
static void
expect_load_error(const char *path, const char *fragment)
{
	struct config cfg;
	char *cause = NULL;

	config_defaults(&cfg);
	alarm(10); /* a blocking open kills the test rather than hanging it */
	assert_int_equal(config_load(&cfg, path, &cause), -1);
	alarm(0);
	assert_non_null(cause);
	if (strstr(cause, path) == NULL || strstr(cause, fragment) == NULL)
		fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", cause, path, fragment);
	free(cause);
	config_free(&cfg);
}

static void
test_config_not_regular(void **state)
{
	char fifo[300], big[300];
	FILE *f;
	int i;

	(void)state;
	snprintf(fifo, sizeof fifo, "%s/fifo.conf", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	expect_load_error(fifo, "not a regular file (a FIFO)");
	expect_load_error("/dev/zero", "not a regular file (a character device)");
	expect_load_error(dir, "not a regular file (a directory)");
	snprintf(big, sizeof big, "%s/big.conf", dir);
	f = fopen(big, "w");
	assert_non_null(f);
	for (i = 0; i < 110000; i++)
		fputs("# padding\n", f);
	fclose(f);
	expect_load_error(big, "larger than 1 MiB");
}

static void
test_ca_file_checked(void **state)
{
	struct config cfg;
	char text[600], *cause;

	(void)state;
	snprintf(text, sizeof text, "[api]\nca_file = %s/missing.pem\n", dir);
	cause = load(text, &cfg);
	assert_non_null(cause);
	if (strstr(cause, "ca_file") == NULL || strstr(cause, "missing.pem") == NULL ||
	    strstr(cause, "No such file") == NULL)
		fail_msg("bad error: %s", cause);
	free(cause);
	config_free(&cfg);

	snprintf(text, sizeof text, "[api]\nca_file = %s\n", dir);
	cause = load(text, &cfg);
	assert_non_null(cause);
	if (strstr(cause, "not a regular file (a directory)") == NULL)
		fail_msg("bad error: %s", cause);
	free(cause);
	config_free(&cfg);

	write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
	snprintf(text, sizeof text, "[api]\nca_file = %s/ca.pem\n", dir);
	assert_null(load(text, &cfg));
	config_free(&cfg);
}

static void
test_credentials_not_regular(void **state)
{
	struct config cfg;
	char path[300], *cause = NULL;
	FILE *f;
	int i;

	(void)state;
	snprintf(path, sizeof path, "%s/cred.fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	config_defaults(&cfg);
	cfg.credentials_file = strdup(path);
	alarm(10);
	assert_int_equal(config_load_credentials(&cfg, &cause), -1);
	alarm(0);
	if (strstr(cause, path) == NULL || strstr(cause, "not a regular file") == NULL)
		fail_msg("bad error: %s", cause);
	free(cause);
	config_free(&cfg);

	snprintf(path, sizeof path, "%s/cred.big", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	for (i = 0; i < 70000; i++)
		fputc('x', f);
	fclose(f);
	chmod(path, 0600);
	config_defaults(&cfg);
	cfg.credentials_file = strdup(path);
	cause = NULL;
	assert_int_equal(config_load_credentials(&cfg, &cause), -1);
	if (strstr(cause, path) == NULL || strstr(cause, "larger than 64 KiB") == NULL)
		fail_msg("bad error: %s", cause);
	free(cause);
	config_free(&cfg);
}

static void
test_http_section(void **state)
{
	struct config cfg;
	char *cause;

	(void)state;
	cause = load("[http]\nlisten = 127.0.0.1:8787\nmax_connections = 10\n"
	    "metrics_auth = no\n", &cfg);
	assert_null(cause);
	assert_string_equal(cfg.http_listen, "127.0.0.1:8787");
	assert_int_equal(cfg.http_addr.port, 8787);
	assert_true(cfg.http_addr.loopback);
	assert_int_equal(cfg.http_max_conns, 10);
	assert_int_equal(cfg.metrics_auth, 0);
	assert_string_equal(cfg.tokens_file, "/etc/wpe-purged/tokens");
	assert_int_equal(cfg.http_header_timeout, 10);
	assert_int_equal(cfg.http_body_timeout, 30);
	assert_int_equal(cfg.http_idle_timeout, 10);
	config_free(&cfg);
	cause = load("[http]\nheader_timeout = 2s\nbody_timeout = 1m\nidle_timeout = 1h\n",
	    &cfg);
	assert_null(cause);
	assert_int_equal(cfg.http_header_timeout, 2);
	assert_int_equal(cfg.http_body_timeout, 60);
	assert_int_equal(cfg.http_idle_timeout, 3600);
	config_free(&cfg);
	cause = load("[http]\nlisten = [::1]:8443\n", &cfg);
	assert_null(cause);
	assert_true(cfg.http_addr.loopback);
	assert_string_equal(cfg.http_addr.host, "::1");
	config_free(&cfg);
	cause = load("[http]\nlisten = unix:/run/x/http.sock\n", &cfg);
	assert_null(cause);
	assert_int_equal(cfg.http_addr.kind, LISTEN_UNIX);
	assert_string_equal(cfg.http_addr.path, "/run/x/http.sock");
	config_free(&cfg);
	cause = load("[http]\nlisten =\n", &cfg);
	assert_null(cause);
	assert_null(cfg.http_listen);
	config_free(&cfg);
	/* Off loopback without TLS: refused, naming the listen line. */
	expect_error("[daemon]\nlog_level = info\n[http]\n# x\nlisten = 0.0.0.0:8443\n",
	    "c.conf:5: an HTTP listener on an address that is not loopback needs tls_cert");
	expect_error("[http]\nlisten = [::]:8443\n", "c.conf:2: ");
	expect_error("[http]\nlisten = 127.0.0.1:8443\ntls_cert = /x.pem\n",
	    "c.conf:3: tls_cert and tls_key go together");
	expect_error("[http]\nlisten = 127.0.0.1\n", "c.conf:2: listen must be");
	expect_error("[http]\nlisten = 127.0.0.1:0\n", "port must be");
	expect_error("[http]\nlisten = 127.0.0.1:65536\n", "port must be");
	expect_error("[http]\nlisten = localhost:80\n", "not a numeric");
	expect_error("[http]\nlisten = ::1:80\n", "not a numeric");
	expect_error("[http]\nlisten = [::1:80\n", "brackets");
	expect_error("[http]\nlisten = unix:relative\n", "absolute path");
	expect_error("[http]\nmetrics_auth = maybe\n", "yes or no");
	expect_error("[http]\nmax_connections = 0\n", "max_connections must be");
	expect_error("[http]\nheader_timeout = 0\n", "header_timeout must be a duration");
	expect_error("[http]\nbody_timeout = 2h\n", "body_timeout must be a duration");
	expect_error("[http]\nidle_timeout = soon\n", "idle_timeout must be a duration");
	expect_error("[http]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:2\n", "set twice");
	/* TLS files are checked at load time when the listener uses them. */
	expect_error("[http]\nlisten = 0.0.0.0:8443\ntls_cert = /nonexistent.pem\n"
	    "tls_key = /nonexistent.key\n", "tls_cert /nonexistent.pem");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_credentials),
		cmocka_unit_test(test_credentials_directory),
		cmocka_unit_test(test_print_redacts),
		cmocka_unit_test(test_error_text_is_utf8),
		cmocka_unit_test(test_config_not_regular),
		cmocka_unit_test(test_ca_file_checked),
		cmocka_unit_test(test_credentials_not_regular),
		cmocka_unit_test(test_http_section),
	};

	return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
