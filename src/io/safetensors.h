/*
 * safetensors reader (mmap) and streaming writer.
 *
 * File format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (may be padded with
 * spaces), then the data section. The JSON object maps each tensor name to
 * {"dtype": "BF16"|"F32"|..., "shape": [..], "data_offsets": [begin, end]} with offsets
 * relative to the data section; the optional "__metadata__" maps strings to strings.
 * Tensors are dense, row-major, little-endian.
 *
 * The reader checks everything a hostile file could get wrong: header length past the
 * end of the file, invalid JSON, unknown dtype, negative or non-integer shape entries,
 * byte size != numel * element size, offsets past the end, overlapping tensors.
 */
#ifndef PI0_SAFETENSORS_H
#define PI0_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#include "model/weights.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    pi0_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;  /* offsets in the data section */
    const void *data;     /* points into the mapping */
} st_tensor;

typedef struct {
    char *key, *value;
} st_meta_entry;

typedef struct st_file {
    void *map;
    size_t map_size;
    const uint8_t *data;  /* start of the data section */
    size_t data_size;
    st_tensor *tensors;
    int n_tensors;
    st_meta_entry *meta;
    int n_meta;
} st_file;

/* Map and validate a file. On failure returns a status with pi0_last_error() set. */
pi0_status st_open(const char *path, st_file **out);
/* Parse a file already in memory (the buffer must outlive the st_file; not freed by st_close). */
pi0_status st_open_memory(const void *buf, size_t size, st_file **out);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);
int64_t st_numel(const st_tensor *t);
/* "[a, b, c]" into buf. */
const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n);
/* Parse a safetensors dtype name; returns -1 if unknown. */
int st_dtype_from_name(const char *name);

/* ---- writer: declare every tensor first, then stream the data in declaration order ---- */
typedef struct st_writer st_writer;
pi0_status st_writer_create(const char *path, st_writer **out);
pi0_status st_writer_meta(st_writer *w, const char *key, const char *value);
pi0_status st_writer_add(st_writer *w, const char *name, pi0_dtype dtype, int ndim, const int64_t *shape);
/* Writes the header (after the last add). */
pi0_status st_writer_begin_data(st_writer *w);
/* Append raw bytes of the tensors, in declaration order. */
pi0_status st_writer_write(st_writer *w, const void *bytes, size_t n);
/* Checks that exactly the declared bytes were written, closes the file. */
pi0_status st_writer_finish(st_writer *w);
/* Abort: close and remove the partial file. */
void st_writer_abort(st_writer *w);

/* Convenience: write a whole file of in-memory tensors. */
typedef struct {
    const char *name;
    pi0_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_entry;
pi0_status st_save(const char *path, const st_entry *entries, int n, const char *const *meta_kv, int n_meta);
#endif
