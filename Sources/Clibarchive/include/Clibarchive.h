#ifndef AIRLOCK_CLIBARCHIVE_H
#define AIRLOCK_CLIBARCHIVE_H

/* libarchive, loaded when a feature needs it (OCI images), not when airlock starts: the
 * binary does not link it. Its declarations are libarchive's own (libarchive-dev); the
 * functions airlock calls are defined in loader.c, each forwarding to the library that
 * `airlock_libarchive_load` opened. Call that first: the forwarders abort when it failed. */
#include <archive.h>
#include <archive_entry.h>

/* Opens libarchive (once; thread-safe). NULL when it is there with every function airlock
 * uses, else why not (for an error message). */
const char *airlock_libarchive_load(void);

#endif
