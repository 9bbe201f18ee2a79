/* metrics.h: the queue's figures as Prometheus / OpenMetrics text, for GET /metrics. */
#ifndef WPE_METRICS_H
#define WPE_METRICS_H

#include <stddef.h>

#include "queue.h"

/* Record one API call's duration, and one job's time from first request to done. */
void metrics_api_call(struct queue_stats *, double seconds);
void metrics_job_done(struct queue_stats *, double seconds);
/*
 * The exposition: OpenMetrics 1.0 when openmetrics (ends with "# EOF"), else the
 * Prometheus text format 0.0.4. connections: open client connections of every transport.
 * Returns a string the caller frees, its length in *len.
 */
char *metrics_render(struct queue *, int connections, int openmetrics, size_t *len);

#endif
