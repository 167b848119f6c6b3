// Forwarders for the libarchive functions airlock calls (generated from archive.h and
// archive_entry.h with `gcc -E`, then checked by the compiler against those declarations:
// a changed signature fails to build). To call another function, add it to a list.
#include "Clibarchive.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define LIBARCHIVE_SONAME "libarchive.so.13"

#define RETURNING(X) \
    X(time_t, archive_entry_atime, (struct archive_entry * a0), (a0)) \
    X(int, archive_entry_atime_is_set, (struct archive_entry * a0), (a0)) \
    X(long, archive_entry_atime_nsec, (struct archive_entry * a0), (a0)) \
    X(mode_t, archive_entry_filetype, (struct archive_entry * a0), (a0)) \
    X(la_int64_t, archive_entry_gid, (struct archive_entry * a0), (a0)) \
    X(const char *, archive_entry_hardlink, (struct archive_entry * a0), (a0)) \
    X(const char *, archive_entry_hardlink_utf8, (struct archive_entry * a0), (a0)) \
    X(time_t, archive_entry_mtime, (struct archive_entry * a0), (a0)) \
    X(long, archive_entry_mtime_nsec, (struct archive_entry * a0), (a0)) \
    X(struct archive_entry *, archive_entry_new, (void), ()) \
    X(const char *, archive_entry_pathname, (struct archive_entry * a0), (a0)) \
    X(const char *, archive_entry_pathname_utf8, (struct archive_entry * a0), (a0)) \
    X(mode_t, archive_entry_perm, (struct archive_entry * a0), (a0)) \
    X(dev_t, archive_entry_rdevmajor, (struct archive_entry * a0), (a0)) \
    X(dev_t, archive_entry_rdevminor, (struct archive_entry * a0), (a0)) \
    X(la_int64_t, archive_entry_size, (struct archive_entry * a0), (a0)) \
    X(int, archive_entry_size_is_set, (struct archive_entry * a0), (a0)) \
    X(int, archive_entry_sparse_count, (struct archive_entry * a0), (a0)) \
    X(const char *, archive_entry_symlink, (struct archive_entry * a0), (a0)) \
    X(const char *, archive_entry_symlink_utf8, (struct archive_entry * a0), (a0)) \
    X(la_int64_t, archive_entry_uid, (struct archive_entry * a0), (a0)) \
    X(int, archive_entry_xattr_next, (struct archive_entry * a0, const char ** a1, const void ** a2, size_t * a3), (a0, a1, a2, a3)) \
    X(int, archive_entry_xattr_reset, (struct archive_entry * a0), (a0)) \
    X(const char *, archive_error_string, (struct archive * a0), (a0)) \
    X(la_ssize_t, archive_read_data, (struct archive * a0, void * a1, size_t a2), (a0, a1, a2)) \
    X(int, archive_read_data_block, (struct archive * a0, const void ** a1, size_t * a2, la_int64_t * a3), (a0, a1, a2, a3)) \
    X(int, archive_read_free, (struct archive * a0), (a0)) \
    X(struct archive *, archive_read_new, (void), ()) \
    X(int, archive_read_next_header, (struct archive * a0, struct archive_entry ** a1), (a0, a1)) \
    X(int, archive_read_open, (struct archive * a0, void * a1, archive_open_callback * a2, archive_read_callback * a3, archive_close_callback * a4), (a0, a1, a2, a3, a4)) \
    X(int, archive_read_open_fd, (struct archive * a0, int a1, size_t a2), (a0, a1, a2)) \
    X(int, archive_read_support_filter_gzip, (struct archive * a0), (a0)) \
    X(int, archive_read_support_filter_zstd, (struct archive * a0), (a0)) \
    X(int, archive_read_support_format_raw, (struct archive * a0), (a0)) \
    X(int, archive_read_support_format_tar, (struct archive * a0), (a0)) \
    X(const char *, archive_version_string, (void), ()) \
    X(int, archive_write_close, (struct archive * a0), (a0)) \
    X(la_ssize_t, archive_write_data, (struct archive * a0, const void * a1, size_t a2), (a0, a1, a2)) \
    X(int, archive_write_free, (struct archive * a0), (a0)) \
    X(int, archive_write_header, (struct archive * a0, struct archive_entry * a1), (a0, a1)) \
    X(struct archive *, archive_write_new, (void), ()) \
    X(int, archive_write_open_fd, (struct archive * a0, int a1), (a0, a1)) \
    X(int, archive_write_set_bytes_in_last_block, (struct archive * a0, int a1), (a0, a1)) \
    X(int, archive_write_set_format_pax_restricted, (struct archive * a0), (a0))

#define VOID(X) \
    X(void, archive_entry_free, (struct archive_entry * a0), (a0)) \
    X(void, archive_entry_set_filetype, (struct archive_entry * a0, unsigned int a1), (a0, a1)) \
    X(void, archive_entry_set_gid, (struct archive_entry * a0, la_int64_t a1), (a0, a1)) \
    X(void, archive_entry_set_hardlink_utf8, (struct archive_entry * a0, const char * a1), (a0, a1)) \
    X(void, archive_entry_set_mtime, (struct archive_entry * a0, time_t a1, long a2), (a0, a1, a2)) \
    X(void, archive_entry_set_pathname_utf8, (struct archive_entry * a0, const char * a1), (a0, a1)) \
    X(void, archive_entry_set_perm, (struct archive_entry * a0, mode_t a1), (a0, a1)) \
    X(void, archive_entry_set_rdev, (struct archive_entry * a0, dev_t a1), (a0, a1)) \
    X(void, archive_entry_set_size, (struct archive_entry * a0, la_int64_t a1), (a0, a1)) \
    X(void, archive_entry_set_symlink_utf8, (struct archive_entry * a0, const char * a1), (a0, a1)) \
    X(void, archive_entry_set_uid, (struct archive_entry * a0, la_int64_t a1), (a0, a1)) \
    X(void, archive_entry_xattr_add_entry, (struct archive_entry * a0, const char * a1, const void * a2, size_t a3), (a0, a1, a2, a3))

#define POINTER(ret, name, params, args) static ret(*p_##name) params;
RETURNING(POINTER)
VOID(POINTER)

static void *handle;
static char failure[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
    // A test stands in a missing library with another name (never a path a user sets).
    const char *soname = getenv("AIRLOCK_TEST_ONLY_LIBARCHIVE");
    if (soname == NULL || soname[0] == 0) soname = LIBARCHIVE_SONAME;
    void *library = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *why = dlerror();
        snprintf(failure, sizeof failure, "%s", why ? why : soname);
        return;
    }
#define RESOLVE(ret, name, params, args)                                                  \
    if ((p_##name = (ret(*) params)dlsym(library, #name)) == NULL) {                      \
        snprintf(failure, sizeof failure, "%s has no function %s (too old?)", soname, #name); \
        return;                                                                           \
    }
    RETURNING(RESOLVE)
    VOID(RESOLVE)
    handle = library;
}

const char *airlock_libarchive_load(void) {
    pthread_once(&once, load);
    return handle != NULL ? NULL : failure;
}

static void missing(const char *name) {
    fprintf(stderr, "airlock: %s called before libarchive was loaded: %s\n", name, airlock_libarchive_load() ?: "(a bug)");
    abort();
}

#define FORWARD(ret, name, params, args)           \
    ret name params {                              \
        if (handle == NULL) missing(#name);        \
        return p_##name args;                      \
    }
#define FORWARD_VOID(ret, name, params, args)      \
    ret name params {                              \
        if (handle == NULL) missing(#name);        \
        p_##name args;                             \
    }
RETURNING(FORWARD)
VOID(FORWARD_VOID)
