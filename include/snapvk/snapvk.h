/*
 * snapvk.h: the C API of snapvk, a Vulkan inference runtime for Llama-family GGUF models with
 * SnapKV KV-cache compression. One header, C99, no other snapvk header needed.
 *
 *   snapvk_device   a Vulkan device with snapvk's kernels built on it
 *   snapvk_model    a GGUF model loaded onto a device (weights, tokenizer)
 *   snapvk_session  one conversation: its KV cache (full or compressed) and activations
 *
 * Quick start (error checks left out; see docs/embedding.md):
 *
 *   snapvk_device* dev; snapvk_model* model; snapvk_session* s;
 *   snapvk_device_create(NULL, &dev);
 *   snapvk_model_load(dev, "model.gguf", NULL, &model);
 *   snapvk_session_options so = {0};   (zero means default; see ABI below)
 *   so.struct_size = sizeof so;
 *   so.kv_policy = SNAPVK_KV_POLICY_SNAPKV; so.kv_budget = 64; so.kv_window = 8;
 *   snapvk_session_create(model, &so, &s);
 *   snapvk_session_prefill_text(s, "Once upon a time");
 *   snapvk_session_generate(s, NULL, 64, print_piece, NULL, NULL);
 *   snapvk_session_free(s); snapvk_model_free(model); snapvk_device_free(dev);
 *
 * ERRORS. Every function that can fail returns a snapvk_status. snapvk_last_error() gives the
 * message of the last such call made by the calling thread ("" after SNAPVK_OK). No C++
 * exception ever leaves a snapvk_* function. Every function checks its arguments: a NULL
 * handle or out pointer, a bad size or enum value gives SNAPVK_INVALID_ARGUMENT.
 *
 * OWNERSHIP AND LIFETIMES. The _create and _load functions return a new handle that the caller
 * releases with the matching _free function (which accepts NULL). A model keeps its device
 * alive and a session keeps its model alive: handles may be freed in any order, and the device
 * is destroyed with its last model or session. Strings and arrays passed in are copied (or only read during the call);
 * strings and pointers handed out are valid as documented at each function.
 *
 * THREAD SAFETY.
 *   - Devices and models may be used from any number of threads at once: one model may serve
 *     several sessions concurrently, sharing its weights (read-only during inference).
 *   - A session is used by one thread at a time. A second call on a session that is busy in
 *     another thread fails with SNAPVK_INVALID_ARGUMENT instead of corrupting it. The one
 *     exception is snapvk_session_cancel(), callable from any thread at any time while the
 *     session handle is valid.
 *   - Callbacks run on the thread that made the call. From a token callback, the read-only
 *     session functions (snapvk_session_get_kv_stats, snapvk_session_get_logits) may be
 *     called; calls that change the session fail with SNAPVK_INVALID_ARGUMENT.
 *   - A _free function must not race with other calls on the same handle.
 *
 * ABI. Structs passed in or out start with `struct_size`: set it to sizeof the struct you
 * compiled against (0 is refused). The library reads or writes only that many bytes, so structs
 * can grow at their end without breaking old callers. Zero-initialised fields mean "default"
 * everywhere.
 * SNAPVK_ABI_VERSION changes when an existing function or field changes meaning; compare it
 * with snapvk_abi_version() at run time.
 */
#ifndef SNAPVK_SNAPVK_H
#define SNAPVK_SNAPVK_H

#include <stddef.h>
#include <stdint.h>

#define SNAPVK_ABI_VERSION 1

/* SNAPVK_API marks exported functions. Define SNAPVK_STATIC when linking the static library
 * on Windows; elsewhere it changes nothing. */
#if defined(_WIN32) || defined(__CYGWIN__)
#  if defined(SNAPVK_STATIC)
#    define SNAPVK_API
#  elif defined(SNAPVK_BUILDING)
#    define SNAPVK_API __declspec(dllexport)
#  else
#    define SNAPVK_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define SNAPVK_API __attribute__((visibility("default")))
#else
#  define SNAPVK_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Status, errors, version, logging                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Every enum ends in a *_MAX_ENUM of 0x7FFFFFFF (as Vulkan's do): the enums are 32-bit, and
   any value from 0 to INT32_MAX a caller passes is a value of the type (the library checks it
   and answers SNAPVK_INVALID_ARGUMENT for what it does not know). */

typedef enum snapvk_status {
  SNAPVK_OK = 0,
  SNAPVK_INVALID_ARGUMENT = 1, /* NULL/invalid argument, bad option, prompt does not fit n_ctx */
  SNAPVK_IO = 2,               /* a file cannot be opened, read or mapped */
  SNAPVK_BAD_MODEL = 3,        /* not a usable GGUF model (format, architecture, tensor types) */
  SNAPVK_OUT_OF_MEMORY = 4,    /* device memory or the device's max_device_memory budget */
  SNAPVK_DEVICE = 5,           /* no usable Vulkan device, device lost or hung, Vulkan error */
  SNAPVK_CANCELLED = 6,        /* snapvk_session_cancel() or a progress callback stopped it */
  SNAPVK_INTERNAL = 7,         /* a bug in snapvk: please report the message */
  SNAPVK_BUFFER_TOO_SMALL = 8, /* a caller buffer is too small; the size needed is reported */
  SNAPVK_STATUS_MAX_ENUM = 0x7FFFFFFF
} snapvk_status;

/* The message of the last snapvk_status-returning call on this thread: "" after SNAPVK_OK.
 * Valid until the next snapvk call on this thread. Never NULL. */
SNAPVK_API const char* snapvk_last_error(void);
/* "SNAPVK_OK", "SNAPVK_INVALID_ARGUMENT", ...; "SNAPVK_UNKNOWN" for other values. Static. */
SNAPVK_API const char* snapvk_status_name(snapvk_status status);
/* The SNAPVK_ABI_VERSION the library was built with. */
SNAPVK_API uint32_t snapvk_abi_version(void);
/* The library version, e.g. "0.1.0". Static. */
SNAPVK_API const char* snapvk_version_string(void);

typedef enum snapvk_log_level {
  SNAPVK_LOG_TRACE = 0,
  SNAPVK_LOG_DEBUG = 1,
  SNAPVK_LOG_INFO = 2,
  SNAPVK_LOG_WARN = 3,
  SNAPVK_LOG_ERROR = 4,
  SNAPVK_LOG_OFF = 6,
  SNAPVK_LOG_MAX_ENUM = 0x7FFFFFFF
} snapvk_log_level;

/* Receives one formatted log line (no trailing newline); may be called from any thread that
 * uses snapvk, including several at once. */
typedef void (*snapvk_log_fn)(int32_t level, const char* message, void* user_data);

/* Log messages at `level` and above (default SNAPVK_LOG_WARN, or $SNAPVK_LOG_LEVEL as
 * trace/debug/info/warn/error/off). Messages go to stderr unless a callback is set. snapvk logs
 * through a logger of its own: an application that uses spdlog keeps its default logger, its
 * registry and its levels as they are. */
SNAPVK_API snapvk_status snapvk_set_log_level(int32_t level);
/* Sends log lines to fn instead of stderr; NULL restores stderr. */
SNAPVK_API snapvk_status snapvk_set_log_callback(snapvk_log_fn fn, void* user_data);

/* ------------------------------------------------------------------------------------------ */
/* Devices                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct snapvk_device snapvk_device;
typedef struct snapvk_model snapvk_model;
typedef struct snapvk_session snapvk_session;

/* Values of VkPhysicalDeviceType. */
typedef enum snapvk_device_type {
  SNAPVK_DEVICE_TYPE_OTHER = 0,
  SNAPVK_DEVICE_TYPE_INTEGRATED = 1,
  SNAPVK_DEVICE_TYPE_DISCRETE = 2,
  SNAPVK_DEVICE_TYPE_VIRTUAL = 3,
  SNAPVK_DEVICE_TYPE_CPU = 4,
  SNAPVK_DEVICE_TYPE_MAX_ENUM = 0x7FFFFFFF
} snapvk_device_type;

typedef struct snapvk_device_info {
  uint32_t struct_size;         /* in: sizeof(snapvk_device_info) */
  uint32_t index;               /* position in Vulkan's enumeration order */
  int32_t type;                 /* snapvk_device_type */
  uint32_t api_version;         /* Vulkan version: major << 22 | minor << 12 | patch */
  uint64_t device_local_bytes;  /* size of the largest device-local memory heap */
  uint32_t subgroup_size;       /* default subgroup size in compute shaders */
  uint32_t fp16;                /* 1: shaderFloat16 */
  uint32_t int8;                /* 1: shaderInt8 */
  uint32_t unified_memory;      /* 1: integrated GPU or CPU (device memory is host memory) */
  char name[256];               /* NUL-terminated, truncated if longer */
  char driver[256];             /* driver name and version, NUL-terminated */
} snapvk_device_info;

/* Number of Vulkan devices on this machine (0 is not an error). */
SNAPVK_API snapvk_status snapvk_device_count(uint32_t* count);
/* Describes device `index` < snapvk_device_count() without opening it. */
SNAPVK_API snapvk_status snapvk_device_describe(uint32_t index, snapvk_device_info* info);

typedef struct snapvk_device_options {
  uint32_t struct_size;       /* sizeof(snapvk_device_options) */
  uint32_t validation;        /* 1: Khronos validation layer (also on with $SNAPVK_VALIDATION=1) */
  const char* device;         /* index ("1") or case-insensitive name substring ("llvmpipe");
                                 NULL or "": $SNAPVK_DEVICE, then the best device
                                 (discrete > integrated > virtual > CPU) */
  uint64_t max_device_memory; /* bytes all models and sessions of this device may allocate;
                                 0: no limit but the device's. Sessions that would exceed it
                                 are refused with SNAPVK_OUT_OF_MEMORY before allocating. */
} snapvk_device_options;

/* Opens a device and builds the kernels (options may be NULL: defaults). */
SNAPVK_API snapvk_status snapvk_device_create(const snapvk_device_options* options, snapvk_device** out);
/* Releases the handle; the device lives on while models or sessions of it exist. NULL: no-op. */
SNAPVK_API void snapvk_device_free(snapvk_device* device);
/* The opened device's description. */
SNAPVK_API snapvk_status snapvk_device_get_info(const snapvk_device* device, snapvk_device_info* info);

typedef struct snapvk_device_memory {
  uint32_t struct_size;        /* sizeof(snapvk_device_memory) */
  uint32_t reserved;
  uint64_t in_use_bytes;       /* device memory held now by every model and session of the device */
  uint64_t peak_bytes;         /* the most held at once since the device was created */
  uint64_t budget_bytes;       /* max_device_memory (0: none) */
  uint64_t validation_errors;  /* validation-layer errors seen (0 without validation) */
} snapvk_device_memory;

SNAPVK_API snapvk_status snapvk_device_get_memory(const snapvk_device* device, snapvk_device_memory* memory);

/* ------------------------------------------------------------------------------------------ */
/* Models                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct snapvk_model_options {
  uint32_t struct_size;      /* sizeof(snapvk_model_options) */
  uint32_t flags;            /* reserved, must be 0 */
  const char* chat_template; /* NULL or "": the GGUF's tokenizer.chat_template (or one chosen from its
                                vocabulary); else a template by name: "chatml", "llama3", "gemma",
                                "mistral" (alias "llama2"), "phi3", or one of llama.cpp's [INST]
                                variants ("llama2-sys", "mistral-v7", ...). An unknown name fails the
                                load with SNAPVK_INVALID_ARGUMENT. */
} snapvk_model_options;

/* Maps the GGUF file at `path`, checks it and uploads its weights to the device.
 * options may be NULL. Errors: SNAPVK_IO (cannot open/read), SNAPVK_BAD_MODEL (format,
 * architecture, unsupported tensor type), SNAPVK_OUT_OF_MEMORY, SNAPVK_DEVICE. */
SNAPVK_API snapvk_status snapvk_model_load(snapvk_device* device, const char* path, const snapvk_model_options* options,
                                           snapvk_model** out);
/* Releases the handle; the model lives on while sessions of it exist. NULL: no-op. */
SNAPVK_API void snapvk_model_free(snapvk_model* model);

typedef struct snapvk_model_info {
  uint32_t struct_size;  /* sizeof(snapvk_model_info) */
  uint32_t n_vocab;
  uint32_t n_ctx_train;  /* the context length the model was trained for */
  uint32_t n_embd;
  uint32_t n_layer;
  uint32_t n_head;
  uint32_t n_head_kv;
  uint32_t head_dim;
  uint32_t n_ff;
  int32_t bos;           /* token ids, -1 when the vocabulary has none */
  int32_t eos;
  uint32_t reserved;
  uint64_t weight_bytes; /* device memory of the weights */
  char arch[64];         /* general.architecture: "llama", "qwen2", "qwen3", "gemma3" */
  char name[256];        /* general.name, "" when absent */
} snapvk_model_info;

SNAPVK_API snapvk_status snapvk_model_get_info(const snapvk_model* model, snapvk_model_info* info);

/* Flags of snapvk_tokenize. */
#define SNAPVK_TOKENIZE_ADD_SPECIAL 1u   /* BOS (and EOS) as the model's vocabulary asks */
#define SNAPVK_TOKENIZE_PARSE_SPECIAL 2u /* control tokens written in the text ("<s>") become tokens */
/* Flags of snapvk_detokenize. */
#define SNAPVK_DETOKENIZE_SPECIAL 1u     /* render control tokens as their text instead of "" */
#define SNAPVK_DETOKENIZE_STRIP_SPACE 2u /* drop the space SentencePiece puts before the first word */

/* Token ids of the NUL-terminated UTF-8 `text`. Writes up to `capacity` ids to `tokens` and
 * the number of ids to *n_tokens. tokens may be NULL with capacity 0 to ask for the count
 * (SNAPVK_OK); a smaller non-zero capacity gives SNAPVK_BUFFER_TOO_SMALL with *n_tokens set. */
SNAPVK_API snapvk_status snapvk_tokenize(const snapvk_model* model, const char* text, uint32_t flags, int32_t* tokens,
                                         size_t capacity, size_t* n_tokens);
/* The text of n_tokens ids, NUL-terminated, into `text` of `capacity` bytes; *length gets the
 * text's length without the NUL (so capacity must be at least *length + 1). text may be NULL
 * with capacity 0 to ask for the length; too small a capacity gives SNAPVK_BUFFER_TOO_SMALL.
 * A text cut between two calls may split a UTF-8 sequence (byte tokens). */
SNAPVK_API snapvk_status snapvk_detokenize(const snapvk_model* model, const int32_t* tokens, size_t n_tokens,
                                           uint32_t flags, char* text, size_t capacity, size_t* length);

/* ------------------------------------------------------------------------------------------ */
/* Chat templates                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* One message of a conversation. In an array every element has the same struct_size, which is
 * the array's stride (set it to sizeof(snapvk_chat_message) in each). */
typedef struct snapvk_chat_message {
  uint32_t struct_size; /* sizeof(snapvk_chat_message) */
  uint32_t reserved;
  const char* role;     /* "system", "user" or "assistant"; NUL-terminated */
  const char* content;  /* NUL-terminated UTF-8 */
} snapvk_chat_message;

typedef struct snapvk_chat_template_info {
  uint32_t struct_size;        /* sizeof(snapvk_chat_template_info) */
  uint32_t has_default_system; /* 1: the template states a system message, rendered when a
                                  conversation does not begin with one (SmolLM2, Qwen2.5) */
  char name[32];               /* "chatml", "llama3", "gemma", "phi3", "llama2", "mistral-v7", ... */
  char source[224];            /* where it came from: "tokenizer.chat_template", "chosen by name",
                                  or the vocabulary's special tokens when the GGUF has no template */
} snapvk_chat_template_info;

/* The model's chat template. Fails with SNAPVK_INVALID_ARGUMENT when the GGUF's template is none
 * that snapvk renders (the message lists the names; choose one with snapvk_model_options.chat_template). */
SNAPVK_API snapvk_status snapvk_model_get_chat_template(const snapvk_model* model, snapvk_chat_template_info* info);

/* Renders n_messages messages through the model's chat template, as llama.cpp's built-in
 * templates render them; with add_assistant non-zero the assistant's opening (the generation
 * prompt) ends the text. Special tokens are written as text ("<|im_start|>"): tokenize with
 * SNAPVK_TOKENIZE_PARSE_SPECIAL (and SNAPVK_TOKENIZE_ADD_SPECIAL for the start of a conversation).
 * The text, NUL-terminated, goes to `text` of `capacity` bytes as snapvk_detokenize writes its
 * text: *length gets its length without the NUL; text may be NULL with capacity 0 to ask for it;
 * too small a capacity gives SNAPVK_BUFFER_TOO_SMALL. */
SNAPVK_API snapvk_status snapvk_chat_apply_template(const snapvk_model* model, const snapvk_chat_message* messages,
                                                    size_t n_messages, int add_assistant, char* text, size_t capacity,
                                                    size_t* length);

/* ------------------------------------------------------------------------------------------ */
/* Sessions                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* KV-cache policies: which prompt entries each layer and head keeps after the first prefill. */
typedef enum snapvk_kv_policy {
  SNAPVK_KV_POLICY_FULL = 0,   /* no compression */
  SNAPVK_KV_POLICY_SNAPKV = 1, /* observation-window votes, pooled, top-C per head */
  SNAPVK_KV_POLICY_PYRAMIDKV = 2,
  SNAPVK_KV_POLICY_STREAMINGLLM = 3,
  SNAPVK_KV_POLICY_H2O = 4,
  SNAPVK_KV_POLICY_ADAKV = 5,
  SNAPVK_KV_POLICY_MAX_ENUM = 0x7FFFFFFF
} snapvk_kv_policy;

/* KV-cache storage (llama.cpp's cache types, and snapvk's rotated hq4 / hq3). The block types
 * (q8_0 and the 4-, 5- and 3-bit ones) need head_dim % 32 == 0. */
typedef enum snapvk_kv_type {
  SNAPVK_KV_TYPE_F16 = 0,
  SNAPVK_KV_TYPE_F32 = 1,
  SNAPVK_KV_TYPE_Q8_0 = 2,
  SNAPVK_KV_TYPE_BF16 = 3,
  SNAPVK_KV_TYPE_Q4_0 = 4,
  SNAPVK_KV_TYPE_Q4_1 = 5,
  SNAPVK_KV_TYPE_IQ4_NL = 6,
  SNAPVK_KV_TYPE_Q5_0 = 7,
  SNAPVK_KV_TYPE_Q5_1 = 8,
  SNAPVK_KV_TYPE_HQ4 = 9, /* rotated (Walsh-Hadamard) 4-bit: 4.5 bits per value */
  SNAPVK_KV_TYPE_HQ3 = 10, /* rotated 3-bit: 3.5 bits per value */
  SNAPVK_KV_TYPE_MAX_ENUM = 0x7FFFFFFF
} snapvk_kv_type;

typedef enum snapvk_kv_pool {
  SNAPVK_KV_POOL_MAX = 0,
  SNAPVK_KV_POOL_AVG = 1,
  SNAPVK_KV_POOL_MAX_ENUM = 0x7FFFFFFF
} snapvk_kv_pool;
typedef enum snapvk_kv_gqa {
  SNAPVK_KV_GQA_MEAN = 0,
  SNAPVK_KV_GQA_MAX = 1,
  SNAPVK_KV_GQA_SUM = 2,
  SNAPVK_KV_GQA_MAX_ENUM = 0x7FFFFFFF
} snapvk_kv_gqa;

/* Prefill progress in token-layers: done of total. Return non-zero to cancel the prefill
 * (it then returns SNAPVK_CANCELLED). Called for prefills of more than one token. */
typedef int (*snapvk_progress_fn)(uint64_t done, uint64_t total, void* user_data);

typedef struct snapvk_session_options {
  uint32_t struct_size;        /* sizeof(snapvk_session_options) */
  uint32_t n_ctx;              /* positions held, prompt + generated; 0: the model's training
                                  context, at most 4096 */
  uint32_t n_batch;            /* prompt tokens per prefill step; 0: 256 */
  int32_t kv_type;             /* snapvk_kv_type of K and V; 0: f16 (kv_type_v sets V's alone) */
  int32_t kv_policy;           /* snapvk_kv_policy; 0: full */
  uint32_t kv_budget;          /* C: entries kept per KV head, window included; 0: use kv_ratio */
  const char* kv_policy_name;  /* when not NULL: "full", "snapkv", "pyramidkv", "streamingllm",
                                  "h2o" or "adakv", overriding kv_policy */
  float kv_ratio;              /* C = ceil(ratio * prompt length), ratio in (0, 1], when
                                  kv_budget is 0 */
  uint32_t kv_window;          /* W: the last prompt tokens, always kept; 0: 32 */
  uint32_t kv_kernel;          /* pooling kernel size, odd; 0: 7 (the paper's) */
  int32_t kv_pool;             /* snapvk_kv_pool; 0: max */
  int32_t kv_gqa;              /* snapvk_kv_gqa: query-head votes -> KV-head vote; 0: mean */
  int32_t kv_pool_ahead;       /* pooling also keeps this many positions after a voted one;
                                  0: the default (none: the paper's symmetric pooling),
                                  -1: none */
  snapvk_progress_fn on_progress; /* may be NULL */
  void* progress_user_data;
  uint32_t kv_endless;         /* 1: endless chat: the cache keeps kv_budget entries per head
                                  plus the current turn (n_ctx slots per head, allocated once);
                                  each snapvk_session_generate compacts it again at its end when
                                  it holds more. Positions go on past n_ctx. Needs snapkv,
                                  pyramidkv or streamingllm and kv_budget < n_ctx. */
  uint32_t reserved2;
  int32_t kv_complete_words;   /* a kept token brings the rest of its word or number, up to this
                                  many tokens either way (see docs/fidelity.md): 0 the default (4),
                                  -1 none (the paper's selection) */
  int32_t kv_sinks;            /* streamingllm: the first tokens, always kept: 0 the default (4),
                                  -1 none (a sliding window) */
  int32_t kv_type_v;           /* V's snapvk_kv_type when kv_type_v_set is 1 (K keeps kv_type) */
  uint32_t kv_type_v_set;
} snapvk_session_options;

/* A session of `model` (options may be NULL: full f16 cache, default n_ctx). A full cache is
 * allocated now; a compressed one when its prompt arrives. Errors: SNAPVK_INVALID_ARGUMENT
 * (options), SNAPVK_OUT_OF_MEMORY (does not fit the device or its budget). */
SNAPVK_API snapvk_status snapvk_session_create(snapvk_model* model, const snapvk_session_options* options,
                                               snapvk_session** out);
/* Frees the session's device memory and the handle. NULL: no-op. */
SNAPVK_API void snapvk_session_free(snapvk_session* session);

/* Appends the NUL-terminated UTF-8 `text` to the session: tokenized with BOS when the session
 * is empty (as `snapvk run` does), without it afterwards. The first prefill of a session is
 * compressed by its KV policy; later ones (the next turns of a chat) are appended after the
 * compacted cache at full fidelity. Fails with SNAPVK_INVALID_ARGUMENT when the tokens do not
 * fit the remaining context, SNAPVK_CANCELLED when cancelled: the session is then as before
 * the call. */
SNAPVK_API snapvk_status snapvk_session_prefill_text(snapvk_session* session, const char* text);
/* The same with token ids (nothing added). */
SNAPVK_API snapvk_status snapvk_session_prefill_tokens(snapvk_session* session, const int32_t* tokens,
                                                       size_t n_tokens);

/* Prefills a conversation through the model's chat template, appending only what is new: pass
 * the whole conversation each time (the messages given before, then the answer generated since
 * as an "assistant" message, e.g. its text as the token callback received it, then the new
 * messages). Only the new messages' text is tokenized and prefilled (BOS as the vocabulary asks
 * when the session is empty; special tokens parsed). With add_assistant non-zero the
 * assistant's opening ends it, ready for snapvk_session_generate, which stops at the template's
 * end of turn. Fails with SNAPVK_INVALID_ARGUMENT, the session unchanged, when the messages do
 * not continue the conversation the session holds, when nothing is new, or when the session holds
 * a plain prompt (prefill_text/tokens): snapvk_session_reset starts over. Other failures as
 * snapvk_session_prefill_text. */
SNAPVK_API snapvk_status snapvk_session_prefill_chat(snapvk_session* session, const snapvk_chat_message* messages,
                                                     size_t n_messages, int add_assistant);

#define SNAPVK_SEED_RANDOM UINT64_MAX

/* Sampling, in llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature.
 * Zero-initialised parameters are greedy decoding (argmax, lowest id on ties). */
typedef struct snapvk_sampling_params {
  uint32_t struct_size;  /* sizeof(snapvk_sampling_params) */
  float temperature;     /* <= 0: greedy */
  int32_t top_k;         /* <= 0: off */
  float top_p;           /* 0 or >= 1: off */
  float min_p;           /* <= 0: off */
  float repeat_penalty;  /* 0 or 1: off */
  int32_t repeat_last_n; /* tokens the penalty looks back over; 0: 64 */
  uint32_t reserved;
  uint64_t seed;         /* the random generator restarts from it at each generate call;
                            SNAPVK_SEED_RANDOM: a random seed */
} snapvk_sampling_params;

/* Called with each generated token and its text (NUL-terminated, valid during the call; a
 * piece may be part of a UTF-8 sequence). Return non-zero to stop after this token. */
typedef int (*snapvk_token_fn)(int32_t token, const char* piece, void* user_data);

typedef enum snapvk_stop_reason {
  SNAPVK_STOP_MAX_TOKENS = 0,   /* max_tokens generated */
  SNAPVK_STOP_END_OF_GENERATION = 1, /* the model sampled an end-of-generation token (not added) */
  SNAPVK_STOP_CALLBACK = 2,     /* the token callback returned non-zero */
  SNAPVK_STOP_CONTEXT_FULL = 3, /* n_ctx positions are used */
  SNAPVK_STOP_CANCELLED = 4,    /* snapvk_session_cancel() (the call returns SNAPVK_CANCELLED) */
  SNAPVK_STOP_REASON_MAX_ENUM = 0x7FFFFFFF
} snapvk_stop_reason;

typedef struct snapvk_generate_result {
  uint32_t struct_size;  /* sizeof(snapvk_generate_result) */
  uint32_t n_tokens;     /* tokens generated (each was passed to the callback and is in the cache) */
  int32_t stop_reason;   /* snapvk_stop_reason */
  int32_t last_token;    /* the last token sampled (the end-of-generation one included); -1: none */
  double decode_ms;      /* wall time of the call */
} snapvk_generate_result;

/* Generates up to max_tokens tokens (0: until end of generation or a full context) after what
 * the session holds, which must not be empty. End of generation: the vocabulary's end-of-generation
 * tokens and the chat template's end of turn. Every token passed to on_token (may be NULL) is
 * appended to the session's cache, so a later prefill continues the conversation after it and
 * a later generate call continues the text. params may be NULL (greedy); result may be NULL and
 * is filled on SNAPVK_OK and SNAPVK_CANCELLED. */
SNAPVK_API snapvk_status snapvk_session_generate(snapvk_session* session, const snapvk_sampling_params* params,
                                                 uint32_t max_tokens, snapvk_token_fn on_token, void* user_data,
                                                 snapvk_generate_result* result);

/* The logits after the last token the session holds (n_vocab floats). *logits stays valid until
 * the next call that changes the session. Fails when the session is empty. */
SNAPVK_API snapvk_status snapvk_session_get_logits(snapvk_session* session, const float** logits, size_t* n_vocab);

typedef struct snapvk_kv_stats {
  uint32_t struct_size;       /* sizeof(snapvk_kv_stats) */
  uint32_t n_past;            /* tokens the session holds */
  uint32_t n_ctx;             /* positions it can hold */
  uint32_t prompt_len;        /* tokens of the compressed first prompt; 0 for a full cache */
  int32_t kv_policy;          /* snapvk_kv_policy */
  int32_t kv_type;            /* snapvk_kv_type */
  uint64_t full_bytes;        /* what a full cache needs for the n_past tokens */
  uint64_t retained_bytes;    /* what this session's cache holds for them */
  uint64_t allocated_bytes;   /* device bytes of the session's K/V buffers (room included) */
  double ratio;               /* full_bytes / retained_bytes (1 without compression) */
  uint64_t device_bytes;      /* device memory in use now, whole device (all models, sessions) */
  uint64_t peak_device_bytes; /* peak device memory since the device was created, whole device */
  double prefill_ms;          /* wall time of the last prefill of more than one token */
  double score_ms;            /* GPU time of the compression passes of the first prefill */
  double pool_ms;
  double select_ms;
  double gather_ms;
  int32_t kv_type_v;          /* snapvk_kv_type of V (kv_type: of K) */
} snapvk_kv_stats;

SNAPVK_API snapvk_status snapvk_session_get_kv_stats(snapvk_session* session, snapvk_kv_stats* stats);

/* Forgets every token: the next prefill starts a new conversation (and is compressed again).
 * Also drops a pending cancel request. */
SNAPVK_API snapvk_status snapvk_session_reset(snapvk_session* session);

/* ---- Packs: a session's state saved and loaded (docs/packs.md) ----
 * A pack holds the session's KV cache as it is (full or compressed, in its KV type), its
 * positions, its token ids, the KV policy and a fingerprint of the model. Loading one replaces
 * what a session holds, without any prefill: a question prefilled after it gives the same tokens
 * and logits as prefilling the document and the question in one session (bit for bit with a full
 * cache). A pack loads into a session of the same model and KV type whose n_ctx holds it; the
 * session's own policy does not matter (the pack's cache is loaded as it is). A chat may follow a
 * loaded pack (snapvk_session_prefill_chat). Errors: SNAPVK_IO (file), SNAPVK_INVALID_ARGUMENT
 * with a one-line message for a pack that is truncated, corrupted (checksum), of another format
 * version, model or KV type, or too long for n_ctx; the session is then unchanged. */
SNAPVK_API snapvk_status snapvk_session_save(snapvk_session* session, const char* path);
SNAPVK_API snapvk_status snapvk_session_load(snapvk_session* session, const char* path);
/* The pack into `buffer` of `capacity` bytes; *size gets its size. buffer may be NULL with
 * capacity 0 to ask for the size; too small a capacity gives SNAPVK_BUFFER_TOO_SMALL. */
SNAPVK_API snapvk_status snapvk_session_save_to_memory(snapvk_session* session, void* buffer, size_t capacity,
                                                       size_t* size);
SNAPVK_API snapvk_status snapvk_session_load_from_memory(snapvk_session* session, const void* data, size_t size);

/* Asks the session's running prefill or generate call (on another thread) to stop: it returns
 * SNAPVK_CANCELLED at its next check (each prefill batch or layer, each generated token). A
 * cancelled prefill leaves the session as before that call; a cancelled generate keeps the tokens
 * already passed to the callback. A request made while no call runs cancels the next prefill or
 * generate call (snapvk_session_reset drops it). Safe from any thread and from callbacks. */
SNAPVK_API snapvk_status snapvk_session_cancel(snapvk_session* session);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SNAPVK_SNAPVK_H */
