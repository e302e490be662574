/* safetensors reader/writer; the format is described in safetensors.h. */
#define _GNU_SOURCE
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"

#define ST_MAX_HEADER (100u << 20) /* 100 MB, as the reference implementation */

static const struct {
    const char *name;
    pi0_dtype dt;
} k_dtypes[] = {{"F32", PI0_DT_F32}, {"BF16", PI0_DT_BF16}, {"F16", PI0_DT_F16}, {"I32", PI0_DT_I32},
                {"I64", PI0_DT_I64}, {"U8", PI0_DT_U8},     {"BOOL", PI0_DT_BOOL}};

int st_dtype_from_name(const char *name) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(name, k_dtypes[i].name)) return (int)k_dtypes[i].dt;
    return -1;
}

const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

int64_t st_numel(const st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Read a non-negative integer that fits in int64 from a JSON number. */
static int json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static pi0_status parse_tensor(st_file *f, const cJSON *item, st_tensor *t) {
    const char *name = item->string;
    if (!cJSON_IsObject(item)) return pi0_fail(PI0_ERR_FORMAT, "tensor %s: header entry is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return pi0_fail(PI0_ERR_FORMAT, "tensor %s: missing dtype", name);
    int d = st_dtype_from_name(dt->valuestring);
    if (d < 0) return pi0_fail(PI0_ERR_FORMAT, "tensor %s: unsupported dtype %s", name, dt->valuestring);
    t->dtype = (pi0_dtype)d;
    if (!cJSON_IsArray(sh)) return pi0_fail(PI0_ERR_FORMAT, "tensor %s: missing shape", name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS) return pi0_fail(PI0_ERR_FORMAT, "tensor %s: %d dimensions (at most %d)", name, nd, ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (!json_u64(cJSON_GetArrayItem(sh, i), &v) || v > (1ull << 40))
            return pi0_fail(PI0_ERR_FORMAT, "tensor %s: bad shape entry %d", name, i);
        t->shape[i] = (int64_t)v;
        numel *= v;
        if (numel > (1ull << 40)) return pi0_fail(PI0_ERR_FORMAT, "tensor %s: shape too large", name);
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_u64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        !json_u64(cJSON_GetArrayItem(off, 1), &t->end))
        return pi0_fail(PI0_ERR_FORMAT, "tensor %s: bad data_offsets", name);
    if (t->end < t->begin)
        return pi0_fail(PI0_ERR_FORMAT, "tensor %s: data_offsets [%llu, %llu] are reversed", name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > f->data_size)
        return pi0_fail(PI0_ERR_FORMAT, "tensor %s: data_offsets end %llu points past the end of the data (%zu bytes)",
                        name, (unsigned long long)t->end, f->data_size);
    if (t->end - t->begin != numel * pi0_dtype_size(t->dtype))
        return pi0_fail(PI0_ERR_FORMAT, "tensor %s: %llu bytes for %llu elements of %s", name,
                        (unsigned long long)(t->end - t->begin), (unsigned long long)numel, dt->valuestring);
    t->name = strdup(name);
    if (!t->name) return pi0_fail(PI0_ERR_OOM, "out of memory");
    t->data = f->data + t->begin;
    return PI0_OK;
}

static pi0_status parse_header(st_file *f, const char *json, size_t len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return pi0_fail(PI0_ERR_FORMAT, "header is not valid JSON (near byte %ld)", (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - json : 0));
    pi0_status st = PI0_OK;
    if (!cJSON_IsObject(root)) {
        st = pi0_fail(PI0_ERR_FORMAT, "header is not a JSON object");
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    if (!f->tensors) {
        st = pi0_fail(PI0_ERR_OOM, "out of memory");
        goto done;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (f->meta) {
                st = pi0_fail(PI0_ERR_FORMAT, "__metadata__ appears twice in the header");
                goto done;
            }
            if (!cJSON_IsObject(it)) {
                st = pi0_fail(PI0_ERR_FORMAT, "__metadata__ is not an object");
                goto done;
            }
            int m = cJSON_GetArraySize(it);
            f->meta = calloc((size_t)m + 1, sizeof *f->meta);
            if (!f->meta) {
                st = pi0_fail(PI0_ERR_OOM, "out of memory");
                goto done;
            }
            for (const cJSON *kv = it->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) {
                    st = pi0_fail(PI0_ERR_FORMAT, "__metadata__ value of %s is not a string", kv->string);
                    goto done;
                }
                st_meta_entry *e = &f->meta[f->n_meta++];
                e->key = strdup(kv->string);
                e->value = strdup(kv->valuestring);
                if (!e->key || !e->value) {
                    st = pi0_fail(PI0_ERR_OOM, "out of memory");
                    goto done;
                }
            }
            continue;
        }
        if (st_find(f, it->string)) {
            st = pi0_fail(PI0_ERR_FORMAT, "tensor %s appears twice in the header", it->string);
            goto done;
        }
        st = parse_tensor(f, it, &f->tensors[f->n_tensors]);
        if (st != PI0_OK) goto done;
        f->n_tensors++;
    }
    /* Overlap check: sort by begin, each must start at or after the previous end. */
    if (f->n_tensors > 1) {
        st_tensor **order = malloc((size_t)f->n_tensors * sizeof *order);
        if (!order) {
            st = pi0_fail(PI0_ERR_OOM, "out of memory");
            goto done;
        }
        for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
        qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_begin);
        for (int i = 1; i < f->n_tensors; i++)
            if (order[i]->begin < order[i - 1]->end && order[i]->end > order[i]->begin) {
                st = pi0_fail(PI0_ERR_FORMAT, "tensors %s and %s overlap in the data section", order[i - 1]->name,
                              order[i]->name);
                break;
            }
        free(order);
    }
done:
    cJSON_Delete(root);
    return st;
}

static pi0_status open_buffer(st_file *f, const uint8_t *buf, size_t size, const char *what) {
    if (size < 8) return pi0_fail(PI0_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", what, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > size - 8)
        return pi0_fail(PI0_ERR_FORMAT, "%s: header length %llu exceeds file size %zu", what, (unsigned long long)n, size);
    if (n > ST_MAX_HEADER) return pi0_fail(PI0_ERR_FORMAT, "%s: header length %llu is over 100 MB", what, (unsigned long long)n);
    f->data = buf + 8 + n;
    f->data_size = size - 8 - (size_t)n;
    pi0_status st = parse_header(f, (const char *)buf + 8, (size_t)n);
    if (st != PI0_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", pi0_last_error());
        return pi0_fail(st, "%s: %s", what, msg);
    }
    return PI0_OK;
}

pi0_status st_open_memory(const void *buf, size_t size, st_file **out) {
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f) return pi0_fail(PI0_ERR_OOM, "out of memory");
    pi0_status st = open_buffer(f, buf, size, "safetensors buffer");
    if (st != PI0_OK) {
        st_close(f);
        return st;
    }
    *out = f;
    return PI0_OK;
}

pi0_status st_open(const char *path, st_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pi0_fail(PI0_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return pi0_fail(PI0_ERR_IO, "%s is not a regular file", path);
    }
    st_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return pi0_fail(PI0_ERR_OOM, "out of memory");
    }
    f->map_size = (size_t)sb.st_size;
    if (f->map_size > 0) {
        f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            close(fd);
            st_close(f);
            return pi0_fail(PI0_ERR_IO, "cannot mmap %s: %s", path, strerror(errno));
        }
    }
    close(fd);
    pi0_status st = open_buffer(f, f->map ? f->map : (const uint8_t *)"", f->map_size, path);
    if (st != PI0_OK) {
        st_close(f);
        return st;
    }
    *out = f;
    return PI0_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    if (f->map) munmap(f->map, f->map_size);
    free(f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && !strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
    return NULL;
}

/* ---------------------------------------------------------------- writer */

struct st_writer {
    FILE *fp;
    char *path;
    cJSON *header, *meta;
    uint64_t offset;        /* bytes declared so far */
    uint64_t written;       /* data bytes written so far */
    int started;
};

pi0_status st_writer_create(const char *path, st_writer **out) {
    *out = NULL;
    st_writer *w = calloc(1, sizeof *w);
    if (!w) return pi0_fail(PI0_ERR_OOM, "out of memory");
    w->path = strdup(path);
    w->header = cJSON_CreateObject();
    w->meta = cJSON_CreateObject();
    if (!w->path || !w->header || !w->meta) {
        st_writer_abort(w);
        return pi0_fail(PI0_ERR_OOM, "out of memory");
    }
    cJSON_AddItemToObject(w->header, "__metadata__", w->meta);
    w->fp = fopen(path, "wb");
    if (!w->fp) {
        pi0_status st = pi0_fail(PI0_ERR_IO, "cannot create %s: %s", path, strerror(errno));
        st_writer_abort(w);
        return st;
    }
    *out = w;
    return PI0_OK;
}

pi0_status st_writer_meta(st_writer *w, const char *key, const char *value) {
    if (!cJSON_AddStringToObject(w->meta, key, value)) return pi0_fail(PI0_ERR_OOM, "out of memory");
    return PI0_OK;
}

pi0_status st_writer_add(st_writer *w, const char *name, pi0_dtype dtype, int ndim, const int64_t *shape) {
    if (w->started) return pi0_fail(PI0_ERR_INVALID_ARG, "st_writer_add(%s) after the data started", name);
    cJSON *t = cJSON_CreateObject();
    cJSON *sh = cJSON_CreateArray();
    cJSON *off = cJSON_CreateArray();
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shape[i]));
        numel *= (uint64_t)shape[i];
    }
    uint64_t nbytes = numel * pi0_dtype_size(dtype);
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)w->offset));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(w->offset + nbytes)));
    cJSON_AddStringToObject(t, "dtype", pi0_dtype_name(dtype));
    cJSON_AddItemToObject(t, "shape", sh);
    cJSON_AddItemToObject(t, "data_offsets", off);
    cJSON_AddItemToObject(w->header, name, t);
    w->offset += nbytes;
    return PI0_OK;
}

pi0_status st_writer_begin_data(st_writer *w) {
    char *json = cJSON_PrintUnformatted(w->header);
    if (!json) return pi0_fail(PI0_ERR_OOM, "out of memory");
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7; /* keep the data 8-byte aligned */
    uint8_t n8[8];
    for (int i = 0; i < 8; i++) n8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(n8, 1, 8, w->fp) == 8 && fwrite(json, 1, len, w->fp) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', w->fp) != EOF;
    free(json);
    if (!ok) return pi0_fail(PI0_ERR_IO, "write %s: %s", w->path, strerror(errno));
    w->started = 1;
    return PI0_OK;
}

pi0_status st_writer_write(st_writer *w, const void *bytes, size_t n) {
    if (!w->started) PI0_TRY(st_writer_begin_data(w));
    if (w->written + n > w->offset) return pi0_fail(PI0_ERR_INVALID_ARG, "%s: more data than declared", w->path);
    if (n && fwrite(bytes, 1, n, w->fp) != n) return pi0_fail(PI0_ERR_IO, "write %s: %s", w->path, strerror(errno));
    w->written += n;
    return PI0_OK;
}

pi0_status st_writer_finish(st_writer *w) {
    pi0_status st = PI0_OK;
    if (!w->started) st = st_writer_begin_data(w);
    if (st == PI0_OK && w->written != w->offset)
        st = pi0_fail(PI0_ERR_INVALID_ARG, "%s: %llu data bytes written, %llu declared", w->path,
                      (unsigned long long)w->written, (unsigned long long)w->offset);
    if (st == PI0_OK && fclose(w->fp) != 0) st = pi0_fail(PI0_ERR_IO, "close %s: %s", w->path, strerror(errno));
    else if (st != PI0_OK) {
        fclose(w->fp);
        remove(w->path);
    }
    w->fp = NULL;
    cJSON_Delete(w->header);
    free(w->path);
    free(w);
    return st;
}

void st_writer_abort(st_writer *w) {
    if (!w) return;
    if (w->fp) {
        fclose(w->fp);
        remove(w->path);
    }
    if (w->header) cJSON_Delete(w->header);
    else cJSON_Delete(w->meta);
    free(w->path);
    free(w);
}

pi0_status st_save(const char *path, const st_entry *e, int n, const char *const *meta_kv, int n_meta) {
    st_writer *w;
    PI0_TRY(st_writer_create(path, &w));
    pi0_status st = PI0_OK;
    for (int i = 0; st == PI0_OK && i < n_meta; i++) st = st_writer_meta(w, meta_kv[2 * i], meta_kv[2 * i + 1]);
    for (int i = 0; st == PI0_OK && i < n; i++) st = st_writer_add(w, e[i].name, e[i].dtype, e[i].ndim, e[i].shape);
    for (int i = 0; st == PI0_OK && i < n; i++) {
        size_t bytes = pi0_dtype_size(e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++) bytes *= (size_t)e[i].shape[d];
        st = st_writer_write(w, e[i].data, bytes);
    }
    if (st != PI0_OK) {
        st_writer_abort(w);
        return st;
    }
    return st_writer_finish(w);
}
