/*
 * dht/log.c - one-line logging shared by every layer above proto/.
 *
 * Lines go to stderr ("2026-11-21T10:00:00.123 info  net [3fa2c1] ...") or
 * to syslog for a daemonized chordfs. The level is a process-wide atomic so
 * any thread may log; the log_*() macros check it before formatting.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "dht/dht-int.h"

static atomic_int log_level = DHT_LOG_WARN;
static atomic_bool log_syslog;
static uint64_t (*_Atomic log_clock)(void);

void dht_log_set_level(int level)
{
    if (level < DHT_LOG_ERROR)
        level = DHT_LOG_ERROR;
    if (level > DHT_LOG_DEBUG)
        level = DHT_LOG_DEBUG;
    atomic_store(&log_level, level);
}

int dht_log_get_level(void)
{
    return atomic_load(&log_level);
}

void dht_log_use_syslog(bool on)
{
    if (on)
        openlog("chordfs", LOG_PID, LOG_DAEMON);
    atomic_store(&log_syslog, on);
}

void dht_log_set_clock(uint64_t (*now_ms)(void))
{
    atomic_store(&log_clock, now_ms);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

void dht_log(int level, const char *module, const char *node, const char *fmt,
             ...)
{
    char msg[1024], stamp[64];
    va_list ap;
    uint64_t (*clk)(void) = atomic_load(&log_clock);

    if (level < 0 || level > DHT_LOG_DEBUG)
        level = DHT_LOG_DEBUG;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    if (atomic_load(&log_syslog)) {
        syslog(syslog_prio[level], "%s %s%s%s%s %s", level_names[level], module,
               node ? " [" : "", node ? node : "", node ? "]" : "", msg);
        return;
    }
    if (clk) {
        uint64_t t = clk();
        snprintf(stamp, sizeof stamp, "t=%llu.%03llu",
                 (unsigned long long)(t / 1000),
                 (unsigned long long)(t % 1000));
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + n, sizeof stamp - n, ".%03ld", ts.tv_nsec / 1000000);
    }
    fprintf(stderr, "%s %-5s %s%s%s%s %s\n", stamp, level_names[level], module,
            node ? " [" : "", node ? node : "", node ? "]" : "", msg);
}
