/* `pi0`: command-line front end of libpi0 (infer, bench, mkweights). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io/safetensors.h"

static int usage(void) {
    fprintf(stderr,
            "usage: pi0 <command> [options]\n"
            "  infer     -m MODEL --obs OBS -o ACTIONS [--dump FILE] [--backend auto|cpu|cuda] [--steps N] [--seed N]\n"
            "  bench     [-m MODEL] [--config full|tiny] [--backend B] [--horizon H] [--steps N] [--cameras C]\n"
            "            [--prompt-len L] [--runs N] [--reference] [--json]\n"
            "  mkweights --config full|tiny [--seed N] [--dtype bf16|f32] (-o FILE | --list)\n"
            "  policy-infer (-m MODEL | --random tiny) --policy-config CFG --raw-obs OBS -o ACTIONS [--tokenizer SPM]\n"
            "            [--norm-stats JSON] [--seed N | --noise FILE] [--dump-inputs FILE]\n"
            "  serve     (-m MODEL | --random tiny|full) --policy-config CFG [--host H] [--port N] [--noise-seed N]\n"
            "            (docs/SERVER.md)\n");
    return 2;
}

static void log_stderr(pi0_log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= PI0_LOG_INFO) fprintf(stderr, "pi0: %s\n", msg);
}

int cli_parse_backend(const char *s, pi0_backend *b) {
    if (!strcmp(s, "auto")) *b = PI0_BACKEND_AUTO;
    else if (!strcmp(s, "cpu")) *b = PI0_BACKEND_CPU;
    else if (!strcmp(s, "cuda")) *b = PI0_BACKEND_CUDA;
    else return -1;
    return 0;
}

/* Dump every intermediate the reference comparison needs (docs/FORMATS.md). */
static pi0_status dump(pi0_session *s, const pi0_config *c, const cli_obs *o, int horizon, const float *noise,
                       const float *actions, const char *path) {
    const int N = (c->image_size / c->patch_size) * (c->image_size / c->patch_size), KVD = c->num_kv_heads * c->head_dim;
    int P = 0;
    st_entry e[3 + 2 * 64 + 3];
    char names[3 + 2 * 64][24];
    float *bufs[3 + 2 * 64 + 1] = {0};
    int ne = 0, nb = 0;
    pi0_status st = PI0_OK;
    if (c->llm_depth > 64) return PI0_ERR_UNSUPPORTED;
    for (int k = 0; st == PI0_OK && k < PI0_NUM_CAMERAS; k++) {
        if (!o->obs.image_mask[k]) continue;
        float *b = bufs[nb++] = malloc((size_t)N * c->llm_width * sizeof(float));
        st = b ? pi0_stage_vit(s, o->obs.images[k], b) : PI0_ERR_OOM;
        snprintf(names[ne], sizeof names[ne], "img_emb.%d", k);
        e[ne] = (st_entry){names[ne], PI0_DT_F32, 2, {N, c->llm_width}, b};
        ne++;
    }
    if (st == PI0_OK) st = pi0_stage_prefill(s, &o->obs, &P);
    int32_t plen = P;
    e[ne++] = (st_entry){"prefix_len", PI0_DT_I32, 1, {1}, &plen};
    for (int l = 0; st == PI0_OK && l < c->llm_depth; l++) {
        float *k = bufs[nb++] = malloc((size_t)(P ? P : 1) * KVD * sizeof(float));
        float *v = bufs[nb++] = malloc((size_t)(P ? P : 1) * KVD * sizeof(float));
        st = k && v ? pi0_stage_kv(s, l, k, v) : PI0_ERR_OOM;
        snprintf(names[ne], sizeof names[ne], "k.%d", l);
        e[ne] = (st_entry){names[ne], PI0_DT_F32, 2, {P, KVD}, k};
        ne++;
        snprintf(names[ne], sizeof names[ne], "v.%d", l);
        e[ne] = (st_entry){names[ne], PI0_DT_F32, 2, {P, KVD}, v};
        ne++;
    }
    float *v0 = bufs[nb++] = malloc((size_t)horizon * c->action_dim * sizeof(float));
    if (st == PI0_OK) st = v0 ? pi0_stage_velocity(s, o->obs.state, noise, 1.0f, v0) : PI0_ERR_OOM;
    e[ne++] = (st_entry){"velocity.0", PI0_DT_F32, 2, {horizon, c->action_dim}, v0};
    e[ne++] = (st_entry){"actions", PI0_DT_F32, 2, {horizon, c->action_dim}, actions};
    if (st == PI0_OK) st = st_save(path, e, ne, NULL, 0);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return st;
}

static int cmd_infer(int argc, char **argv) {
    const char *model = NULL, *obs_path = NULL, *out = NULL, *dump_path = NULL;
    pi0_model_params mp = pi0_model_default_params();
    pi0_session_params sp = pi0_session_default_params();
    uint64_t seed = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--obs") && i + 1 < argc) obs_path = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump_path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) sp.num_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) mp.n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            if (cli_parse_backend(argv[++i], &mp.backend)) return usage();
        } else return usage();
    }
    if (!model || !obs_path || !out) return usage();
    mp.progress = cli_progress;
    mp.progress_user = "load";
    pi0_model *m;
    pi0_status st = pi0_model_load(model, &mp, &m);
    if (st != PI0_OK) return cli_error(model, st);
    const pi0_config *c = pi0_model_config(m);
    cli_obs o;
    if (cli_obs_load(obs_path, c, &o)) {
        pi0_model_free(m);
        return 1;
    }
    o.obs.noise_seed = seed;
    sp.action_horizon = o.horizon;
    if (o.obs.n_tokens > c->max_token_len) sp.max_token_len = 0; /* let the check name the problem */
    pi0_session *s = NULL;
    st = pi0_session_create(m, &sp, &s);
    int rc = 0;
    int H = o.horizon ? o.horizon : c->action_horizon;
    float *actions = malloc((size_t)H * c->action_dim * sizeof(float));
    float *noise = malloc((size_t)H * c->action_dim * sizeof(float));
    if (st == PI0_OK && (!actions || !noise)) st = PI0_ERR_OOM;
    if (st == PI0_OK && !o.noise) { /* make the noise explicit so the dump can use it */
        pi0_gaussian_noise(seed, noise, (size_t)H * c->action_dim);
        o.obs.noise = noise;
    }
    pi0_timing t;
    if (st == PI0_OK) st = pi0_infer(s, &o.obs, actions, &t);
    if (st == PI0_OK) {
        st_entry e = {"actions", PI0_DT_F32, 2, {H, c->action_dim}, actions};
        st = st_save(out, &e, 1, NULL, 0);
    }
    if (st == PI0_OK && dump_path) st = dump(s, c, &o, H, o.obs.noise, actions, dump_path);
    if (st != PI0_OK) rc = cli_error("infer", st);
    else
        fprintf(stderr, "infer: %.1f ms (ViT %.1f, prefill %.1f, diffusion %.1f)\n", t.total_ms, t.vit_ms, t.prefill_ms,
                t.diffusion_ms);
    free(actions);
    free(noise);
    cli_obs_free(&o);
    pi0_session_free(s);
    pi0_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    pi0_set_log(log_stderr, NULL);
    if (!strcmp(argv[1], "infer")) return cmd_infer(argc, argv);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc, argv);
    if (!strcmp(argv[1], "mkweights")) return cmd_mkweights(argc, argv);
    if (!strcmp(argv[1], "policy-infer")) return cmd_policy_infer(argc, argv);
    if (!strcmp(argv[1], "serve")) {
#ifdef PI0_HAVE_SERVER
        return cmd_serve(argc, argv);
#else
        fprintf(stderr, "error: this build has no server: install libwslay-dev and libmsgpack-dev "
                        "(bash tools/setup.sh) and rebuild\n");
        return 1;
#endif
    }
    return usage();
}
