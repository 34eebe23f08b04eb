// rlpo-dist's C ABI over LibTorch's c10d: a TCPStore for the rendezvous, ProcessGroupGloo (CPU
// tensors) and, when compiled with RLPO_WITH_NCCL, ProcessGroupNCCL (CUDA tensors). One
// translation unit on purpose: the torch headers cost ~30 s to compile and cargo caches the result.
//
// Conventions of every function here:
// - no C++ exception crosses the boundary: each entry point catches everything and returns a
//   non-zero status with a malloc'd message in *err (freed by rlpo_dist_free_string);
// - tensors are tch's `at::Tensor*` (torch-sys's C_tensor), borrowed: the Rust side owns them
//   and keeps them alive for the call; collectives write into them in place;
// - handles (store, group) are heap objects owned by Rust and released with their _free call.
//
// The shim uses gloo's declarations (Debian's libgloo-dev) only so that ProcessGroupGloo.hpp
// compiles: it never touches a gloo type beyond holding the shared_ptr<gloo::transport::Device>
// that LibTorch's own createDefaultDevice() returns. tests/abi.rs checks that no gloo code is
// emitted here, so a difference between Debian's gloo and the one LibTorch was built with cannot
// reach the process through this file.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RLPO_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
  }
  return out;
}

// Run `f`; on an exception store its text (without c10's C++ backtrace) in *err and return 1.
template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    *err = dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = dup(e.what());
  } catch (...) {
    *err = dup("unknown C++ exception");
  }
  return 1;
}

// Wait for a collective; a failed or timed-out one throws (and is turned into an error above).
void finish(const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait()) {
    throw std::runtime_error("the collective did not complete");
  }
}

std::vector<at::Tensor> one(void* t) {
  return {*static_cast<at::Tensor*>(t)};
}

}  // namespace

extern "C" {

void rlpo_dist_free_string(char* s) {
  std::free(s);
}

int rlpo_dist_has_nccl() {
#ifdef RLPO_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Rank 0 (`is_server`) hosts the store and waits up to `timeout_ms` for `world` clients; the
// others connect to host:port, retrying until the timeout. Every key rlpo uses lives under
// `prefix` (a launch attempt's own namespace in a store that may outlive it).
int rlpo_store_new(const char* host, uint16_t port, int is_server, int world, int64_t timeout_ms,
                   const char* prefix, void** out, char** err) {
  return guarded(err, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new Store{c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp)};
  });
}

// A second client connection to the same store (for a thread of its own: the heartbeat).
int rlpo_store_clone(void* store, void** out, char** err) {
  return guarded(err, [&] { *out = new Store{static_cast<Store*>(store)->store->clone()}; });
}

int rlpo_store_add(void* store, const char* key, int64_t delta, int64_t* out, char** err) {
  return guarded(err, [&] { *out = static_cast<Store*>(store)->store->add(std::string(key), delta); });
}

int rlpo_store_set(void* store, const char* key, const uint8_t* data, size_t len, char** err) {
  return guarded(err, [&] {
    static_cast<Store*>(store)->store->set(std::string(key), std::vector<uint8_t>(data, data + len));
  });
}

// The value at `key` if it exists (*found = 1; malloc'd copy in *out, freed with
// rlpo_dist_free_string), without waiting for it.
int rlpo_store_try_get(void* store, const char* key, char** out, size_t* len, int* found, char** err) {
  return guarded(err, [&] {
    auto& s = static_cast<Store*>(store)->store;
    *found = 0;
    if (!s->check({std::string(key)})) {
      return;
    }
    auto v = s->get(std::string(key));
    *out = dup(std::string(v.begin(), v.end()));
    *len = v.size();
    *found = 1;
  });
}

void rlpo_store_free(void* store) {
  delete static_cast<Store*>(store);
}

// A Gloo process group over `store` (keys under `prefix`), rendezvous included: every rank must
// call it; it returns once all `world` ranks are connected (or fails after the timeout).
int rlpo_group_new_gloo(void* store, const char* prefix, int rank, int world, int64_t timeout_ms,
                        void** out, char** err) {
  return guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix),
                                                           static_cast<Store*>(store)->store);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    // As torch.distributed does: GLOO_SOCKET_IFNAME=eth0[,eth1] picks the interfaces, else the
    // address this host's name resolves to (loopback when it does not resolve).
    const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifnames != nullptr && *ifnames != '\0') {
      std::string all(ifnames);
      std::size_t start = 0;
      while (start <= all.size()) {
        std::size_t end = all.find(',', start);
        if (end == std::string::npos) end = all.size();
        if (end > start) {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(all.substr(start, end - start)));
        }
        start = end + 1;
      }
    }
    if (opts->devices.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    // One worker thread: rlpo issues collectives one at a time, in program order.
    opts->threads = 1;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, opts);
    *out = new Group{pg, timeout};
  });
}

// An NCCL process group on cuda:`device`. Blocking wait is switched on (unless the environment
// already says otherwise) so that a timed-out collective throws in wait() instead of hanging.
int rlpo_group_new_nccl(void* store, const char* prefix, int rank, int world, int device,
                        int64_t timeout_ms, void** out, char** err) {
#ifdef RLPO_WITH_NCCL
  return guarded(err, [&] {
    setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix),
                                                           static_cast<Store*>(store)->store);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world, opts);
    at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    pg->setBoundDeviceId(dev);
    pg->eagerConnectSingleDevice(dev);
    *out = new Group{pg, timeout};
  });
#else
  (void)store, (void)prefix, (void)rank, (void)world, (void)device, (void)timeout_ms, (void)out;
  *err = dup("rlpo was built without NCCL (build with the `nccl` cargo feature against a CUDA LibTorch)");
  return 1;
#endif
}

// op: 0 = sum, 1 = max.
int rlpo_group_all_reduce(void* group, void* tensor, int op, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    auto tensors = one(tensor);
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp(c10d::ReduceOp::MAX) : c10d::ReduceOp(c10d::ReduceOp::SUM);
    opts.timeout = g->timeout;
    finish(g->backend->allreduce(tensors, opts));
  });
}

// outputs: `n` tensors (n = world) shaped like `input`; output i receives rank i's input.
int rlpo_group_all_gather(void* group, void* input, void* const* outputs, size_t n, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    auto inputs = one(input);
    std::vector<std::vector<at::Tensor>> outs(1);
    for (size_t i = 0; i < n; ++i) {
      outs[0].push_back(*static_cast<at::Tensor*>(outputs[i]));
    }
    c10d::AllgatherOptions opts;
    opts.timeout = g->timeout;
    finish(g->backend->allgather(outs, inputs, opts));
  });
}

int rlpo_group_broadcast(void* group, void* tensor, int root, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    auto tensors = one(tensor);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    finish(g->backend->broadcast(tensors, opts));
  });
}

int rlpo_group_barrier(void* group, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    finish(g->backend->barrier(opts));
  });
}

void rlpo_group_free(void* group) {
  delete static_cast<Group*>(group);
}

}  // extern "C"
