// mvdrive's shim over libtorch's c10d: a TCPStore rendezvous and a ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA, with -DUSE_C10D_NCCL) behind a C interface that takes tch's
// tensors (`at::Tensor*`) directly. Every entry point catches C++ exceptions and returns
// their message through `err` (never throws across the boundary).
#include <chrono>
#include <csignal>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <c10/util/Logging.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

void set_err(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Runs `f`; on an exception writes its message (without c10's backtrace) and returns 1.
template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    set_err(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_err(err, len, e.what());
  } catch (...) {
    set_err(err, len, "unknown C++ exception in c10d");
  }
  return 1;
}

// c10d logs every failure it throws, with a backtrace, on stderr; the message reaches the
// caller through `err` instead. TORCH_CPP_LOG_LEVEL (INFO, WARNING, ...) brings them back.
void quiet_c10d_logs() {
  const char* level = std::getenv("TORCH_CPP_LOG_LEVEL");
  if (level == nullptr || *level == '\0') FLAGS_caffe2_log_level = 3;
}

std::vector<at::Tensor> tensors_of(const at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

c10d::ReduceOp::RedOpType op_of(int op) {
  switch (op) {
    case 1: return c10d::ReduceOp::MAX;
    case 2: return c10d::ReduceOp::MIN;
    default: return c10d::ReduceOp::SUM;
  }
}

}  // namespace

extern "C" {

// Rendezvous at host:port (the store is served by this process when `serve`, else joined as
// a client; its keys live under `prefix`) and create the process group.
// backend: 0 = gloo, 1 = nccl. Returns null and fills `err` on failure.
void* mvd_group_new(const char* host, int port, int serve, const char* prefix, int rank,
                    int world, int backend, long long timeout_ms, char* err, size_t err_len) {
  quiet_c10d_logs();
  // gloo writes to its peers with writev, which raises SIGPIPE on a socket whose peer is
  // gone: a rank that dies would silently kill the others instead of failing their next
  // collective with an error. Python (so PyTorch) ignores SIGPIPE; a process in a group
  // must too.
  std::signal(SIGPIPE, SIG_IGN);
  Group* out = nullptr;
  int rc = guarded(err, err_len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = serve != 0;
    opts.numWorkers = world;
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto g = std::make_unique<Group>();
    g->store = tcp;
    if (backend == 1) {
#ifdef USE_C10D_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      g->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
      throw std::runtime_error("this build has no NCCL (build with --features cuda,nccl)");
#endif
    } else {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else {
        o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    }
    out = g.release();
  });
  return rc == 0 ? out : nullptr;
}

void mvd_group_free(void* g) { delete static_cast<Group*>(g); }

// Serves a rendezvous store at host:port (port 0: a free one, chosen by the kernel when it
// binds, so no other process can take it in between) for ranks that join it as clients, the
// way torchrun's agent does. Writes the bound port to `bound`. Returns null and fills `err` on
// failure.
void* mvd_store_serve(const char* host, int port, long long timeout_ms, int* bound, char* err,
                      size_t err_len) {
  quiet_c10d_logs();
  c10d::TCPStore* out = nullptr;
  int rc = guarded(err, err_len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = true;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *bound = static_cast<int>(tcp->getPort());
    out = tcp.release();
  });
  return rc == 0 ? out : nullptr;
}

void mvd_store_free(void* s) {
  c10::intrusive_ptr<c10d::TCPStore>::reclaim(static_cast<c10d::TCPStore*>(s));
}

// In-place all-reduce of n tensors (op: 0 sum, 1 max, 2 min), waiting for completion.
int mvd_all_reduce(void* g, const at::Tensor* const* ts, size_t n, int op, char* err,
                   size_t err_len) {
  return guarded(err, err_len, [&] {
    auto v = tensors_of(ts, n);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp(op_of(op));
    static_cast<Group*>(g)->backend->allreduce(v, o)->wait();
  });
}

// In-place broadcast of one tensor from `root`.
int mvd_broadcast(void* g, const at::Tensor* t, int root, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    static_cast<Group*>(g)->backend->broadcast(v, o)->wait();
  });
}

int mvd_barrier(void* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    c10d::BarrierOptions o;
    static_cast<Group*>(g)->backend->barrier(o)->wait();
  });
}

}  // extern "C"
