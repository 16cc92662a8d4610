#!/usr/bin/env python3
"""PyTorch through AnyCCL: N processes on ONE GPU (NCCL refuses that; AnyCCL allows it) run
torch.distributed collectives with the nccl backend while LD_PRELOAD puts libanyccl.so.1 in
place of NCCL, and compare every result with the same collective computed on the CPU.

    LD_PRELOAD=build/lib/libanyccl.so.1 python3 tests/gpu/torch_check.py [nprocs]

Prints one line per check (PASS/FAIL torch/<collective>-<dtype>-<count>) and a summary table;
exits 1 on any wrong result, 2 when torch, CUDA or the preload is missing."""
import os
import socket
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Small integers: sums over a few ranks are exact in every type checked, so results compare
# exactly (no tolerance) with the CPU's.
def make_input(torch, rank, n, dtype, dev):
    base = torch.arange(n, dtype=torch.int64)
    return ((base * 7 + rank * 13) % 17 - 8).to(dtype).to(dev)


def worker(rank, world, port, q):
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.cuda.set_device(0)  # every rank on the same GPU
    dev = torch.device("cuda", 0)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    rows = []

    def check(name, got, want):
        ok = torch.equal(got.cpu(), want.cpu())
        rows.append((name, ok, "" if ok else
                     f"first bad index {int((got.cpu() != want.cpu()).nonzero()[0][0])}"))

    counts = [1, 7, 1027, 1 << 20]
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.float64]
    for dtype in dtypes:
        for n in counts:
            ins = [make_input(torch, r, n, dtype, "cpu") for r in range(world)]
            tag = f"{str(dtype).replace('torch.', '')}-{n}"

            x = ins[rank].to(dev)
            dist.all_reduce(x)
            check(f"all_reduce-{tag}", x, sum(i.to(torch.float64) for i in ins).to(dtype))

            x = ins[rank].to(dev)
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
            check(f"all_reduce_max-{tag}", x, torch.stack(ins).max(dim=0).values)

            out = torch.empty(world * n, dtype=dtype, device=dev)
            dist.all_gather_into_tensor(out, ins[rank].to(dev))
            check(f"all_gather_into_tensor-{tag}", out, torch.cat(ins))

            full = [torch.cat([make_input(torch, r * world + k, n, dtype, "cpu")
                               for k in range(world)]) for r in range(world)]
            out = torch.empty(n, dtype=dtype, device=dev)
            dist.reduce_scatter_tensor(out, full[rank].to(dev))
            want = sum(f.to(torch.float64) for f in full).to(dtype)[rank * n:(rank + 1) * n]
            check(f"reduce_scatter_tensor-{tag}", out, want)

            out = torch.empty(world * n, dtype=dtype, device=dev)
            dist.all_to_all_single(out, full[rank].to(dev))
            want = torch.cat([full[r][rank * n:(rank + 1) * n] for r in range(world)])
            check(f"all_to_all_single-{tag}", out, want)

            x = ins[rank].to(dev)
            dist.broadcast(x, src=world - 1)
            check(f"broadcast-{tag}", x, ins[world - 1])
    torch.cuda.synchronize()
    dist.destroy_process_group()
    q.put((rank, rows))


def main():
    world = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    try:
        import torch
        import torch.multiprocessing as mp
    except ImportError:
        print("SKIP torch/all: no torch in this python3")
        return 2
    if not torch.cuda.is_available():
        print("SKIP torch/all: torch sees no CUDA device")
        return 2
    if "anyccl" not in os.environ.get("LD_PRELOAD", ""):
        print("SKIP torch/all: run with LD_PRELOAD=.../libanyccl.so.1")
        return 2
    ver = torch.cuda.nccl.version()
    print(f"# torch {torch.__version__}, NCCL version seen through the preload: {ver}")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, rows = q.get(timeout=600)
        results[rank] = rows
    for p in procs:
        p.join(timeout=60)
    nbad = 0
    summary = {}
    for rank in sorted(results):
        for name, ok, why in results[rank]:
            coll = name.split("-")[0]
            good, total = summary.get(coll, (0, 0))
            summary[coll] = (good + ok, total + 1)
            if not ok:
                nbad += 1
                print(f"FAIL torch/{name} (rank {rank}): {why}")
    if len(results) != world or any(p.exitcode != 0 for p in procs):
        print(f"FAIL torch/processes: exit codes {[p.exitcode for p in procs]}")
        nbad += 1
    print(f"{'collective':28s} {'correct':>8s} {'checks':>7s}")
    for coll, (good, total) in sorted(summary.items()):
        print(f"{coll:28s} {good:8d} {total:7d}")
    print(("PASS" if nbad == 0 else "FAIL") + f" torch/all: {world} processes on one GPU, "
          f"{sum(t for _, t in summary.values())} checks, {nbad} wrong")
    return 1 if nbad else 0


if __name__ == "__main__":
    sys.exit(main())
