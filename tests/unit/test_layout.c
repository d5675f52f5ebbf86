/*
 * tests/unit/test_layout.c - the pure parts of fs/layout.c: path -> key
 * mapping, parent/basename splitting, name length checks, chunk index
 * arithmetic, and the inode record's encoding.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "fs/fs-int.h"
#include "testhelp.h"

static void test_key_meta_and_dir(void)
{
    char buf[FS_KEY_MAX];

    CHECK_EQ(fs_key_meta("/", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "meta:/") == 0);
    CHECK_EQ(fs_key_meta("/a/b.txt", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "meta:/a/b.txt") == 0);
    CHECK_EQ(fs_key_dir("/a", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "dir:/a") == 0);
    CHECK_EQ(fs_key_meta("/abc", buf, 8), -ENAMETOOLONG);
}

static void test_key_data(void)
{
    uint8_t uuid[FS_UUID_LEN];
    char buf[FS_KEY_MAX], hex[33];

    for (int i = 0; i < FS_UUID_LEN; i++)
        uuid[i] = (uint8_t)(i * 17);
    fs_uuid_hex(uuid, hex);
    CHECK(strcmp(hex, "00112233445566778899aabbccddeeff") == 0);
    CHECK_EQ(fs_key_data(uuid, 42, buf, sizeof buf), 0);
    CHECK(strcmp(buf, "data:00112233445566778899aabbccddeeff:42") == 0);
    CHECK_EQ(fs_key_data(uuid, 0, buf, 10), -ENAMETOOLONG);
}

static void test_path_split(void)
{
    char parent[FS_PATH_MAX];
    const char *name = NULL;

    CHECK_EQ(fs_path_split("/a", parent, sizeof parent, &name), 0);
    CHECK(strcmp(parent, "/") == 0 && strcmp(name, "a") == 0);
    CHECK_EQ(fs_path_split("/a/b/c.txt", parent, sizeof parent, &name), 0);
    CHECK(strcmp(parent, "/a/b") == 0 && strcmp(name, "c.txt") == 0);
    CHECK_EQ(fs_path_split("/", parent, sizeof parent, &name), -EINVAL);
    CHECK_EQ(fs_path_split("rel", parent, sizeof parent, &name), -EINVAL);
    CHECK_EQ(fs_path_split("/abc/d", parent, 3, &name), -ENAMETOOLONG);
}

static void test_path_join_and_within(void)
{
    char buf[FS_PATH_MAX];

    CHECK_EQ(fs_path_join("/", "x", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "/x") == 0);
    CHECK_EQ(fs_path_join("/a/b", "x", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "/a/b/x") == 0);
    CHECK_EQ(fs_path_join("/a", "xyz", buf, 5), -ENAMETOOLONG);
    CHECK(fs_path_within("/a/b", "/a"));
    CHECK(fs_path_within("/a", "/a"));
    CHECK(!fs_path_within("/ab", "/a"));
    CHECK(fs_path_within("/anything", "/"));
}

static void test_name_check(void)
{
    char name[300];

    memset(name, 'n', sizeof name);
    name[255] = 0;
    CHECK_EQ(fs_name_check(name), 0);
    name[255] = 'n';
    name[256] = 0;
    CHECK_EQ(fs_name_check(name), -ENAMETOOLONG);
    CHECK_EQ(fs_name_check(""), -EINVAL);
    CHECK_EQ(fs_name_check("."), -EINVAL);
    CHECK_EQ(fs_name_check(".."), -EINVAL);
    CHECK_EQ(fs_name_check("a/b"), -EINVAL);
    CHECK_EQ(fs_name_check("ok.txt"), 0);
}

static void test_path_check(void)
{
    char path[600];

    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[256] = 0; /* one component of 255 bytes */
    CHECK_EQ(fs_path_check(path), 0);
    path[256] = 'p';
    path[257] = 0; /* 256 bytes */
    CHECK_EQ(fs_path_check(path), -ENAMETOOLONG);
    CHECK_EQ(fs_path_check("/a/b/c"), 0);
    CHECK_EQ(fs_path_check("/"), 0);
}

static void test_chunk_arithmetic(void)
{
    const uint32_t cs = 65536;

    CHECK_EQ(fs_chunk_index(0, cs), 0);
    CHECK_EQ(fs_chunk_index(cs - 1, cs), 0);
    CHECK_EQ(fs_chunk_index(cs, cs), 1);
    CHECK_EQ(fs_chunk_offset(cs + 5, cs), 5);
    CHECK_EQ(fs_chunk_count(0, cs), 0);
    CHECK_EQ(fs_chunk_count(1, cs), 1);
    CHECK_EQ(fs_chunk_count(cs, cs), 1);
    CHECK_EQ(fs_chunk_count(cs + 1, cs), 2);
    CHECK_EQ(fs_chunk_count(100ull << 20, 1u << 20), 100);
    CHECK_EQ(fs_chunk_valid(0, 10, cs), 10);
    CHECK_EQ(fs_chunk_valid(0, 3 * (uint64_t)cs, cs), cs);
    CHECK_EQ(fs_chunk_valid(2, 2 * (uint64_t)cs + 7, cs), 7);
    CHECK_EQ(fs_chunk_valid(3, 2 * (uint64_t)cs + 7, cs), 0);
    /* Far past 4 GiB: no 32-bit overflow. */
    CHECK_EQ(fs_chunk_index(5ull << 32, cs), (5ull << 32) / cs);
    CHECK_EQ(fs_chunk_valid(100000, 100001ull * cs, cs), cs);
}

static void test_inode_roundtrip(void)
{
    struct fs_inode a, b;
    uint8_t *buf;
    size_t len;

    memset(&a, 0, sizeof a);
    a.kind = FS_REG;
    a.mode = 02755;
    a.uid = 1000;
    a.gid = 100;
    a.size = 123456789;
    a.atime_ns = 1;
    a.mtime_ns = 1700000000123456789;
    a.ctime_ns = -5;
    for (int i = 0; i < FS_UUID_LEN; i++)
        a.uuid[i] = (uint8_t)i;
    a.has_uuid = true;
    a.chunk_size = 1 << 20;
    a.ino = 0x123456789abcull;
    CHECK_EQ(fs_inode_xattr_set(&a, "user.x", "hello", 5, 0), 0);
    CHECK_EQ(fs_inode_xattr_set(&a, "user.x", "h", 1, XATTR_CREATE), -EEXIST);
    CHECK_EQ(fs_inode_xattr_set(&a, "user.y", "h", 1, XATTR_REPLACE), -ENODATA);
    CHECK_EQ(fs_inode_xattr_set(&a, "user.e", "", 0, 0), 0);
    CHECK_EQ(fs_inode_encode(&a, &buf, &len), 0);
    CHECK_EQ(fs_inode_decode(buf, len, &b), 0);
    free(buf);
    CHECK_EQ(b.kind, FS_REG);
    CHECK_EQ(b.mode, 02755);
    CHECK_EQ(b.uid, 1000);
    CHECK_EQ(b.gid, 100);
    CHECK_EQ(b.size, 123456789);
    CHECK_EQ(b.mtime_ns, a.mtime_ns);
    CHECK_EQ(b.ctime_ns, -5);
    CHECK(b.has_uuid && memcmp(a.uuid, b.uuid, FS_UUID_LEN) == 0);
    CHECK_EQ(b.chunk_size, 1 << 20);
    CHECK_EQ(b.ino, a.ino);
    CHECK_EQ(b.n_xattrs, 2);
    CHECK(fs_inode_xattr_find(&b, "user.x") &&
          fs_inode_xattr_find(&b, "user.x")->len == 5);
    CHECK_EQ(fs_inode_xattr_remove(&b, "user.x"), 0);
    CHECK_EQ(fs_inode_xattr_remove(&b, "user.x"), -ENODATA);
    fs_inode_fini(&a);
    fs_inode_fini(&b);
}

static void test_inode_symlink_and_bad(void)
{
    struct fs_inode a, b;
    uint8_t *buf;
    size_t len;

    memset(&a, 0, sizeof a);
    a.kind = FS_SYMLINK;
    a.mode = 0777;
    a.target = strdup("../some/where");
    CHECK_EQ(fs_inode_encode(&a, &buf, &len), 0);
    CHECK_EQ(fs_inode_decode(buf, len, &b), 0);
    CHECK(b.kind == FS_SYMLINK && strcmp(b.target, "../some/where") == 0);
    free(buf);
    fs_inode_fini(&b);
    fs_inode_fini(&a);
    /* A regular file without a uuid is refused. */
    memset(&a, 0, sizeof a);
    a.kind = FS_REG;
    a.chunk_size = 65536;
    CHECK_EQ(fs_inode_encode(&a, &buf, &len), 0);
    CHECK_EQ(fs_inode_decode(buf, len, &b), -EIO);
    free(buf);
    CHECK_EQ(fs_inode_decode("\xff\xff\xff", 3, &b), -EIO);
}

int main(void)
{
    RUN(test_key_meta_and_dir);
    RUN(test_key_data);
    RUN(test_path_split);
    RUN(test_path_join_and_within);
    RUN(test_name_check);
    RUN(test_path_check);
    RUN(test_chunk_arithmetic);
    RUN(test_inode_roundtrip);
    RUN(test_inode_symlink_and_bad);
    return DONE();
}
