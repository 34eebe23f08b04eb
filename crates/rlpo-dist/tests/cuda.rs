//! NCCL through the shim (feature `cuda-tests`, run by scripts/gpu_check.sh on a GPU machine):
//! every collective on CUDA tensors with known results, 2 ranks when 2 GPUs are visible, else
//! one rank (a group of one still goes through ProcessGroupNCCL). CPU tensors of the same
//! communicator keep going through Gloo.

mod common;

use common::{as_rank_on, spawn};
use rlpo_dist::ReduceOp;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

fn host<T>(t: &Tensor) -> Vec<T>
where
    for<'a> Vec<T>: TryFrom<&'a Tensor, Error = tch::TchError>,
{
    Vec::<T>::try_from(&t.to_device(Device::Cpu).flatten(0, -1)).unwrap()
}

#[test]
fn nccl_collectives() {
    if let Some((env, comm)) = as_rank_on(true) {
        assert!(comm.has_cuda_group());
        let dev = Device::Cuda(env.local_rank);
        let (r, w) = (comm.rank() as i64, comm.world() as i64);
        let mut t = Tensor::from_slice(&[(r + 1) as f32, -(r as f32)]).to_device(dev);
        comm.all_reduce("f32 sum", &mut t, ReduceOp::Sum).unwrap();
        assert_eq!(host::<f32>(&t), [(w * (w + 1) / 2) as f32, -((w * (w - 1) / 2) as f32)]);
        let mut t = Tensor::from_slice(&[r as f64, 2.5]).to_device(dev);
        comm.all_reduce("f64 max", &mut t, ReduceOp::Max).unwrap();
        assert_eq!(host::<f64>(&t), [(w - 1) as f64, 2.5]);
        // bf16 gradients: integers below 256 are exact.
        let mut t = (Tensor::ones([1 << 16], (Kind::BFloat16, dev)) * (r + 1)).contiguous();
        comm.all_reduce("bf16 sum", &mut t, ReduceOp::Sum).unwrap();
        assert_eq!(host::<f32>(&t.to_kind(Kind::Float))[12345], (w * (w + 1) / 2) as f32);
        let all = comm.all_gather("i64", &Tensor::from_slice(&[r, r * 3]).to_device(dev)).unwrap();
        for (i, t) in all.iter().enumerate() {
            assert_eq!(host::<i64>(t), [i as i64, i as i64 * 3]);
        }
        let mut t = Tensor::from_slice(&[r as f32 + 0.5]).to_device(dev);
        comm.broadcast("f32", &mut t, (w - 1) as usize).unwrap();
        assert_eq!(host::<f32>(&t), [(w - 1) as f32 + 0.5]);
        // The same communicator's CPU tensors go through Gloo.
        let mut c = Tensor::from_slice(&[1.0f64]);
        comm.all_reduce("cpu f64", &mut c, ReduceOp::Sum).unwrap();
        assert_eq!(host::<f64>(&c), [w as f64]);
        comm.barrier("end").unwrap();
        println!("NCCL_OK {r}");
        return;
    }
    let gpus = tch::Cuda::device_count() as usize;
    assert!(gpus >= 1, "no CUDA device visible (this test needs a GPU)");
    let world = gpus.min(2);
    let mut ranks = spawn("nccl_collectives", world, &[]);
    let codes = ranks.wait_all(Duration::from_secs(240));
    let out = ranks.transcript();
    eprintln!("{out}");
    assert!(codes.iter().all(|c| *c == Some(0)), "exit codes {codes:?}\n{out}");
    for r in 0..world {
        assert!(ranks.of(r).iter().any(|l| l.ends_with(&format!("NCCL_OK {r}"))), "rank {r}:\n{out}");
    }
    println!("NCCL collectives passed on {world} rank(s)");
}
