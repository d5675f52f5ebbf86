/*
 * tests/unit/test_mount_helper.c - mount.chordfs's command line, option
 * mapping and binary search (mount-helper/opts.c), without mounting.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mount-helper/mh.h"
#include "tests/unit/testhelp.h"

/* Map and render as one line; "" on error (err holds why). */
static char *map_line(const char *source, const char *opts, bool sloppy,
                      char err[MH_ERR_MAX])
{
    struct mh_argv a;
    char *s;

    if (mh_map("chordfs", source, "/mnt/c", opts, "/home/u", sloppy, &a, err) <
        0)
        return strdup("");
    s = mh_argv_join(&a);
    mh_argv_free(&a);
    return s;
}

#define CHECK_MAP(source, opts, want)                                          \
    do {                                                                       \
        char e_[MH_ERR_MAX] = "";                                              \
        char *got_ = map_line(source, opts, false, e_);                        \
        if (strcmp(got_, want) != 0) {                                         \
            printf("# got:  %s\n# want: %s\n# err: %s\n", got_, want, e_);     \
            th_cur_failed++;                                                   \
        }                                                                      \
        free(got_);                                                            \
    } while (0)

static void test_map_new_ring(void)
{
    CHECK_MAP("new", "listen=127.0.0.1:4000",
              "chordfs --listen 127.0.0.1:4000 -o fsname=new,subtype=chordfs "
              "/mnt/c");
    CHECK_MAP("none", NULL, "chordfs -o fsname=none,subtype=chordfs /mnt/c");
    CHECK_MAP("", "", "chordfs -o fsname=chordfs,subtype=chordfs /mnt/c");
    CHECK_MAP(NULL, NULL, "chordfs -o fsname=chordfs,subtype=chordfs /mnt/c");
}

static void test_map_bootstrap(void)
{
    CHECK_MAP("10.0.0.1:4000", "listen=0.0.0.0:4001",
              "chordfs --bootstrap 10.0.0.1:4000 --listen 0.0.0.0:4001 "
              "-o fsname=10.0.0.1:4000,subtype=chordfs /mnt/c");
}

static void test_map_every_flag(void)
{
    CHECK_MAP("h:1",
              "id=00ff,v=2,timeout=500,network=lab,replicas=2,data_dir=/d,"
              "advertise=10.0.0.2:4000,listen=:4000,chunk_size=64K,"
              "cache_size=1048576",
              "chordfs --bootstrap h:1 --listen :4000 --advertise "
              "10.0.0.2:4000 --data-dir /d --replicas 2 --network lab "
              "--timeout 500 --id 00ff -v 2 --chunk-size 64K --cache-size "
              "1048576 -o fsname=h:1,subtype=chordfs /mnt/c");
    CHECK_MAP("new", "verbose=3",
              "chordfs -v 3 -o "
              "fsname=new,subtype=chordfs /mnt/c");
    CHECK_MAP("new", "v=debug,succ_len=12,log=chordfs.log",
              "chordfs -v debug --succ-len 12 --log /home/u/chordfs.log -o "
              "fsname=new,subtype=chordfs /mnt/c");
    CHECK_MAP("new", "data-dir=/x",
              "chordfs --data-dir /x -o fsname=new,subtype=chordfs /mnt/c");
}

static void test_map_last_value_wins(void)
{
    CHECK_MAP("new", "replicas=2,replicas=5,data_dir=/a,data-dir=/b",
              "chordfs --data-dir /b --replicas 5 -o "
              "fsname=new,subtype=chordfs /mnt/c");
}

static void test_map_drops_fstab_only(void)
{
    CHECK_MAP("new",
              "auto,noauto,user,users,nouser,owner,group,_netdev,nofail,"
              "defaults,comment=systemd.automount,x-systemd.requires=a,"
              "user=root,listen=:1",
              "chordfs --listen :1 -o fsname=new,subtype=chordfs /mnt/c");
}

static void test_map_passes_the_rest(void)
{
    CHECK_MAP("new",
              "rw,noexec,nosuid,nodev,allow_other,listen=:1,"
              "default_permissions,ro,attr_timeout=1.5",
              "chordfs --listen :1 -o fsname=new,subtype=chordfs,rw,noexec,"
              "nosuid,nodev,allow_other,default_permissions,ro,"
              "attr_timeout=1.5 /mnt/c");
    /* Names that merely start like ours are not ours. */
    CHECK_MAP("new", "listening=1,ids",
              "chordfs -o fsname=new,subtype=chordfs,listening=1,ids /mnt/c");
}

static void test_map_own_fsname_kept(void)
{
    CHECK_MAP("new", "fsname=mine,subtype=x",
              "chordfs -o fsname=mine,subtype=x /mnt/c");
    /* A source libfuse could not take as fsname is left out. */
    CHECK_MAP("a,b", NULL, "chordfs --bootstrap a,b -o subtype=chordfs /mnt/c");
}

static void test_map_quotes_and_empties(void)
{
    CHECK_MAP("new", ",,network=\"a,b\",,",
              "chordfs --network a,b -o fsname=new,subtype=chordfs /mnt/c");
    CHECK_MAP("new", "data_dir=\"/with space\"",
              "chordfs --data-dir '/with space' -o fsname=new,subtype=chordfs "
              "/mnt/c");
}

static void test_map_relative_data_dir(void)
{
    CHECK_MAP("new", "data_dir=store/p1",
              "chordfs --data-dir /home/u/store/p1 -o "
              "fsname=new,subtype=chordfs /mnt/c");
}

static void test_map_bad_values(void)
{
    static const char *const bad[] = {
        "replicas=", "replicas=x", "replicas=-1", "timeout=1s",    "listen",
        "v=high",    "data_dir=",  "id",          "chunk_size=1T", "v=4",
        "verbose=",  "succ_len=x", "log=",
    };
    char err[MH_ERR_MAX];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mh_argv a = {0};

        err[0] = '\0';
        CHECK_EQ(mh_map("chordfs", "new", "/m", bad[i], "/", false, &a, err),
                 -EINVAL);
        CHECK(strstr(err, "bad value") != NULL);
        CHECK(a.argv == NULL);
    }
    /* Sloppy (-s) drops them instead. */
    char *s = map_line("new", "replicas=x,listen=:2", true, err);
    CHECK(strcmp(s, "chordfs --listen :2 -o fsname=new,subtype=chordfs "
                    "/mnt/c") == 0);
    free(s);
}

static void test_map_needs_mountpoint(void)
{
    struct mh_argv a;
    char err[MH_ERR_MAX];

    CHECK_EQ(mh_map("chordfs", "new", "", NULL, "/", false, &a, err), -EINVAL);
    CHECK_EQ(mh_map("chordfs", "new", NULL, NULL, "/", false, &a, err),
             -EINVAL);
}

static void test_source_is_new(void)
{
    CHECK(mh_source_is_new("new"));
    CHECK(mh_source_is_new("none"));
    CHECK(mh_source_is_new(""));
    CHECK(mh_source_is_new(NULL));
    CHECK(!mh_source_is_new("127.0.0.1:4000"));
    CHECK(!mh_source_is_new("newhost:1"));
}

static void test_cmdline_as_mount_calls_it(void)
{
    const char *argv[] = {"mount.chordfs", "h:1", "/mnt/c",  "-n", "-sv", "-o",
                          "rw,listen=:1",  "-t",  "chordfs", NULL};
    struct mh_cmdline c;
    char err[MH_ERR_MAX];

    CHECK_EQ(mh_parse_cmdline(9, (char *const *)argv, &c, err), 0);
    CHECK(strcmp(c.source, "h:1") == 0);
    CHECK(strcmp(c.mountpoint, "/mnt/c") == 0);
    CHECK(c.options && strcmp(c.options, "rw,listen=:1") == 0);
    CHECK(c.nomtab && c.sloppy && c.verbose && !c.fake && !c.dry_run);
    CHECK(c.type && strcmp(c.type, "chordfs") == 0);
    mh_cmdline_fini(&c);
}

static void test_cmdline_options_first_and_joined(void)
{
    const char *argv[] = {
        "mount.chordfs", "-oa,b", "-f", "--dry-run", "-o", "c", "-N",
        "123",           "new",   "/m", NULL};
    struct mh_cmdline c;
    char err[MH_ERR_MAX];

    CHECK_EQ(mh_parse_cmdline(10, (char *const *)argv, &c, err), 0);
    CHECK(c.options && strcmp(c.options, "a,b,c") == 0);
    CHECK(c.fake && c.dry_run);
    CHECK(c.namespace_ && strcmp(c.namespace_, "123") == 0);
    CHECK(strcmp(c.source, "new") == 0 && strcmp(c.mountpoint, "/m") == 0);
    mh_cmdline_fini(&c);

    /* "--" ends options; an empty source is a new ring. */
    const char *argv2[] = {"mount.chordfs", "--", "", "-weird", NULL};
    CHECK_EQ(mh_parse_cmdline(4, (char *const *)argv2, &c, err), 0);
    CHECK(strcmp(c.source, "") == 0 && strcmp(c.mountpoint, "-weird") == 0);
    CHECK(c.options == NULL);
    mh_cmdline_fini(&c);
}

static void test_cmdline_errors(void)
{
    const char *missing[] = {"mount.chordfs", "new", NULL};
    const char *extra[] = {"mount.chordfs", "a", "b", "c", NULL};
    const char *badflag[] = {"mount.chordfs", "-x", "a", "b", NULL};
    const char *badlong[] = {"mount.chordfs", "--nope", "a", "b", NULL};
    const char *noval[] = {"mount.chordfs", "a", "b", "-o", NULL};
    const char *help[] = {"mount.chordfs", "--help", NULL};
    struct mh_cmdline c;
    char err[MH_ERR_MAX];

    CHECK_EQ(mh_parse_cmdline(2, (char *const *)missing, &c, err), -EINVAL);
    CHECK(strstr(err, "usage") != NULL);
    CHECK_EQ(mh_parse_cmdline(4, (char *const *)extra, &c, err), -EINVAL);
    CHECK_EQ(mh_parse_cmdline(4, (char *const *)badflag, &c, err), -EINVAL);
    CHECK_EQ(mh_parse_cmdline(4, (char *const *)badlong, &c, err), -EINVAL);
    CHECK_EQ(mh_parse_cmdline(4, (char *const *)noval, &c, err), -EINVAL);
    CHECK(strstr(err, "needs a value") != NULL);
    CHECK_EQ(mh_parse_cmdline(2, (char *const *)help, &c, err), 0);
    CHECK(c.help);
    mh_cmdline_fini(&c);
}

static void test_argv_join_quotes(void)
{
    const char *argvv[] = {"a", "b c", "it's", "", NULL};
    struct mh_argv a = {4, (char **)argvv};
    char *s = mh_argv_join(&a);

    CHECK(s && strcmp(s, "a 'b c' 'it'\\''s' ''") == 0);
    free(s);
}

/* Make dir/chordfs (executable or not); returns its malloc'd path. */
static char *make_bin(const char *dir, mode_t mode)
{
    char *p = malloc(strlen(dir) + 16);
    FILE *f;

    strcpy(p, dir);
    strcat(p, "/chordfs");
    f = fopen(p, "w");
    if (f) {
        fputs("#!/bin/sh\n", f);
        fclose(f);
    }
    chmod(p, mode);
    return p;
}

static void test_find_search_order(void)
{
    char t[] = "/tmp/mh-test-XXXXXX";
    char a[64], b[64], self[80], path[160], err[MH_ERR_MAX];
    char *pa, *pb, *got;

    if (!mkdtemp(t)) {
        CHECK(!"mkdtemp");
        return;
    }
    snprintf(a, sizeof(a), "%s/a", t);
    snprintf(b, sizeof(b), "%s/b", t);
    mkdir(a, 0755);
    mkdir(b, 0755);
    pa = make_bin(a, 0755);
    pb = make_bin(b, 0755);
    snprintf(self, sizeof(self), "%s/mount.chordfs", a);
    snprintf(path, sizeof(path), "/nonexistent:%s", b);

    /* $CHORDFS first, even over the helper's own directory. */
    got = mh_find_chordfs(pb, self, path, err);
    CHECK(got && strcmp(got, pb) == 0);
    free(got);
    /* Then next to the helper. */
    got = mh_find_chordfs(NULL, self, path, err);
    CHECK(got && strcmp(got, pa) == 0);
    free(got);
    /* Then $PATH, skipping a directory whose chordfs is not executable. */
    chmod(pa, 0644);
    got = mh_find_chordfs("", self, path, err);
    CHECK(got && strcmp(got, pb) == 0);
    free(got);
    /* A $CHORDFS that is not executable is an error, not a fallback. */
    got = mh_find_chordfs(pa, self, path, err);
    CHECK(got == NULL);
    CHECK(strstr(err, "CHORDFS") != NULL);

    unlink(pa);
    unlink(pb);
    rmdir(a);
    rmdir(b);
    rmdir(t);
    free(pa);
    free(pb);
}

int main(void)
{
    RUN(test_map_new_ring);
    RUN(test_map_bootstrap);
    RUN(test_map_every_flag);
    RUN(test_map_last_value_wins);
    RUN(test_map_drops_fstab_only);
    RUN(test_map_passes_the_rest);
    RUN(test_map_own_fsname_kept);
    RUN(test_map_quotes_and_empties);
    RUN(test_map_relative_data_dir);
    RUN(test_map_bad_values);
    RUN(test_map_needs_mountpoint);
    RUN(test_source_is_new);
    RUN(test_cmdline_as_mount_calls_it);
    RUN(test_cmdline_options_first_and_joined);
    RUN(test_cmdline_errors);
    RUN(test_argv_join_quotes);
    RUN(test_find_search_order);
    return DONE();
}
