"""Quick min-of-5 times of the batch-vs-memory variants and the floor (benchmarks/xbm.py workload).

    python benchmarks/xbm_quick.py M [THREADS]    # one line per label layout, milliseconds
"""
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
import losses
M=int(sys.argv[1]); B=256; D=128
g=torch.Generator().manual_seed(0)
for layout in ("pk","random"):
    refs=torch.randn(M,D,generator=g)
    yr = torch.arange(M)//8 if layout=="pk" else torch.randint(0, M//8, (M,), generator=g)
    own=torch.arange(B)
    y=yr[:B]
    kw=dict(anchor_index_in_refs=own, margin=0.2, metric="euclidean")
    calls={"floor": lambda a: torch.cdist(a, refs).sum(),
           "batch_all": lambda a: losses.batch_all_triplet_loss_refs(a,y,refs,yr,reduction="mean_positive",**kw),
           "batch_hard": lambda a: losses.batch_hard_triplet_loss_refs(a,y,refs,yr,reduction="mean",**kw),
           "batch_hard_soft": lambda a: losses.batch_hard_triplet_loss_refs(a,y,refs,yr,reduction="mean",soft=True,**{**kw,"margin":None}),
           "semi_tf": lambda a: losses.semi_hard_triplet_loss_refs(a,y,refs,yr,semantics="tf",reduction="mean",**kw),
           "semi_pml": lambda a: losses.semi_hard_triplet_loss_refs(a,y,refs,yr,semantics="pml",reduction="mean_positive",**kw)}
    res=[]
    for n,f in calls.items():
        best=1e9
        for _ in range(5):
            a=refs[:B].clone().requires_grad_(True)
            t=time.perf_counter(); f(a).backward(); best=min(best,time.perf_counter()-t)
        res.append(f"{n} {best*1e3:.0f}")
    print(M, layout, " | ".join(res), flush=True)
