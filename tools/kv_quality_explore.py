#!/usr/bin/env python3
"""Exploration prototype for issue 6's quality gap (docs/kv-compression.md, "Closing the gap"): which idea buys
the most at keys d/4 + seed values on the demo model, measured with a plain fp32 Llama forward in PyTorch on the
weights HF transformers dequantises from the GGUF (tooling only; the engine never needs Python).

Compression is simulated where the engine applies it: pre-RoPE keys and values are replaced by their rank-r
reconstructions (score-metric bases from calibration moments, the maths of engine/kv_profile.h, in HF's half-split
RoPE layout); a recent window / sinks use the full keys and values per (query, key) pair. Ideas: mean-centred
(affine) bases, per-block key/value rank allocation from the spectra (absolute or per-block relative), value and
key sinks, a recent full-rank window. Perplexity: the first 1024 tokens of the GFDL text (BOS first), windows of
512 every 256, as tools/kv_eval; calibration: the first 4096 tokens of GPL-3 in windows of 512.

  python3 tools/kv_quality_explore.py MODEL_DIR GGUF_NAME [seed] [parts] [uni] [mix] [sink] [alloc] [win] [combo] [both]
(both: also the mean-centred bases). Moments are cached in /tmp/kv_quality_explore_moments.pt.
"""
import math, os, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(2)
_d, _f = sys.argv[1], sys.argv[2]
_tok = AutoTokenizer.from_pretrained(_d, gguf_file=_f)
_m = AutoModelForCausalLM.from_pretrained(_d, gguf_file=_f, torch_dtype=torch.float32)
_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
W = {'sd': {k: v for k, v in _m.state_dict().items()}, 'cfg': _m.config.to_dict()}
T = {'eval': _tok(open(os.path.join(_root, 'tests/data/text/GFDL-1.3.txt')).read())['input_ids'],
     'cal': _tok(open('/usr/share/common-licenses/GPL-3').read())['input_ids']}
del _m
sd=W['sd']; cfg=W['cfg']
L=cfg['num_hidden_layers']; H=cfg['num_attention_heads']; G=cfg['num_key_value_heads']; D=cfg['hidden_size']//H
gs=H//G; eps=cfg['rms_norm_eps']; theta=cfg.get('rope_theta') or cfg['rope_parameters']['rope_theta']
inv=1.0/(theta**(torch.arange(0,D,2,dtype=torch.float64)/D))
def P(n): return sd['model.layers.%d.%s'%n] if isinstance(n,tuple) else sd[n]
def rms(x,w): return x*torch.rsqrt(x.pow(2).mean(-1,keepdim=True)+eps)*w
def rope(x,pos):  # x (..., n, D) half-split
  f=pos[:,None].double()*inv[None,:]; c=torch.cos(f).float(); s=torch.sin(f).float()
  c=torch.cat([c,c],-1); s=torch.cat([s,s],-1)
  x1,x2=x[...,:D//2],x[...,D//2:]
  return x*c+torch.cat([-x2,x1],-1)*s
emb=sd['model.embed_tokens.weight']
# comp: function(l, kind, x (n,G,D) pre-rope, ) -> for keys returns (k_comp); values (v_comp). window W full-rank recent.
def forward(ids, comp=None, capture=None, window=0, sinks=0, vonly=False):
  n=len(ids); x=emb[torch.tensor(ids)]; pos=torch.arange(n)
  mask=torch.ones(n,n).tril().bool()
  for l in range(L):
    p='model.layers.%d.'%l
    h=rms(x,sd[p+'input_layernorm.weight'])
    q=(h@sd[p+'self_attn.q_proj.weight'].T).view(n,H,D)
    k=(h@sd[p+'self_attn.k_proj.weight'].T).view(n,G,D)
    v=(h@sd[p+'self_attn.v_proj.weight'].T).view(n,G,D)
    if capture is not None: capture(l,q,k,v)
    kf,vf=k,v
    if comp is not None: k,v=comp(l,k,v)
    qr=rope(q.transpose(0,1),pos)          # H,n,D
    kr=rope(k.transpose(0,1),pos).repeat_interleave(gs,0)
    vv=v.transpose(0,1).repeat_interleave(gs,0)
    s=qr@kr.transpose(1,2)/math.sqrt(D)
    if (window>0 or sinks>0) and comp is not None:
      krf=rope(kf.transpose(0,1),pos).repeat_interleave(gs,0)
      sf=qr@krf.transpose(1,2)/math.sqrt(D)
      rec=((pos[:,None]-pos[None,:])<window)|(pos[None,:]<sinks)
      if not vonly: s=torch.where(rec,sf,s)
    s=s.masked_fill(~mask,float('-inf')); a=torch.softmax(s,-1)
    if (window>0 or sinks>0) and comp is not None:
      vvf=vf.transpose(0,1).repeat_interleave(gs,0)
      o=(a*rec)@vvf+(a*~rec)@vv
    else: o=a@vv
    o=o.transpose(0,1).reshape(n,H*D)@sd[p+'self_attn.o_proj.weight'].T
    x=x+o
    h=rms(x,sd[p+'post_attention_layernorm.weight'])
    g=h@sd[p+'mlp.gate_proj.weight'].T; u=h@sd[p+'mlp.up_proj.weight'].T
    x=x+(torch.nn.functional.silu(g)*u)@sd[p+'mlp.down_proj.weight'].T
  x=rms(x,sd['model.norm.weight'])
  return x@emb.T
import itertools
BOS=1
cal=T['cal'][:4096]; ev=[BOS]+T['eval'][:1023]
kk=torch.zeros(L,G,D,D,dtype=torch.float64); vv=kk.clone(); qq=kk.clone()
ks=torch.zeros(L,G,D,dtype=torch.float64); vs=ks.clone(); cnt=[0]
def cap(l,q,k,v):
  k=k.double(); v=v.double(); q=q.double()
  kk[l]+=torch.einsum('ngi,ngj->gij',k,k); vv[l]+=torch.einsum('ngi,ngj->gij',v,v)
  qg=q.view(-1,G,gs,D); qq[l]+=torch.einsum('nghi,nghj->gij',qg,qg)
  ks[l]+=k.sum(0); vs[l]+=v.sum(0)
  if l==0: cnt[0]+=k.shape[0]
t0=time.time()
import os
if os.path.exists('/tmp/kv_quality_explore_moments.pt'):
  kk,vv,qq,ks,vs=torch.load('/tmp/kv_quality_explore_moments.pt')
else:
  with torch.no_grad():
    for b in range(0,len(cal),512): forward(cal[b:b+512],capture=cap)
  N=cnt[0]; kk/=N; vv/=N; qq/=N; ks/=N; vs/=N
  torch.save((kk,vv,qq,ks,vs),'/tmp/kv_quality_explore_moments.pt')
print('calib',time.time()-t0,flush=True)
# RoPE average (half-split)
nd=512
ang=torch.arange(nd,dtype=torch.float64)[:,None]*inv[None,:]  # nd, D/2
R=torch.zeros(nd,D,D,dtype=torch.float64); h2=D//2
idx=torch.arange(h2)
c=torch.cos(ang); s=torch.sin(ang)
# rope(x): x1' = x1 c - x2 s ; x2' = x2 c + x1 s  -> R[i,i]=c, R[i,i+h]=-s, R[i+h,i]=s, R[i+h,i+h]=c
R[:,idx,idx]=c; R[:,idx,idx+h2]=-s; R[:,idx+h2,idx]=s; R[:,idx+h2,idx+h2]=c
MK=torch.einsum('dai,lgab,dbj->lgij',R,qq,R)/nd   # score q^T R_{-D} k ~ average over rotations; sign of D irrelevant for averaging of R^T C R with symmetric? use R_D both ways
WO=sd  # values metric
MV=torch.zeros(L,G,D,D,dtype=torch.float64)
for l in range(L):
  wo=sd['model.layers.%d.self_attn.o_proj.weight'%l].double()
  for h in range(H):
    b=wo[:,h*D:(h+1)*D]; MV[l,h//gs]+=b.T@b
def basis(C,M):
  # returns down (r rows), up, eig
  w,V=torch.linalg.eigh(M); e=1e-3*w.mean(); w=(w+e).clamp(min=0)
  S=V@torch.diag(w.sqrt())@V.T; Si=V@torch.diag(1/w.sqrt())@V.T
  ew,EV=torch.linalg.eigh(S@C@S); o=ew.argsort(descending=True); ew=ew[o]; EV=EV[:,o]
  return (S@EV).T, (Si@EV).T, ew
def make(center):
  B={}
  for l in range(L):
    for g in range(G):
      for kind,C,M,mu in (('k',kk,MK,ks),('v',vv,MV,vs)):
        Cc=C[l,g]-(torch.outer(mu[l,g],mu[l,g]) if center else 0)
        dn,up,ew=basis(Cc,M[l,g])
        B[kind,l,g]=(dn.float(),up.float(),ew,(mu[l,g].float() if center else torch.zeros(D)))
  return B
Bs={False:make(False),True:make(True)}
print('bases',time.time()-t0,flush=True)
# errors on calib moments
which=sys.argv[3:]
for cen in ((False,True) if 'both' in which else (False,)):
  for kind,C,M,mu in (('k',kk,MK,ks),('v',vv,MV,vs)):
    errs=[]
    for r in (16,32):
      e=0;tot=0
      for l in range(L):
        for g in range(G):
          dn,up,ew,m=Bs[cen][kind,l,g]; dn=dn.double(); up=up.double(); m=m.double()
          P=torch.eye(D,dtype=torch.float64)-up[:r].T@dn[:r]
          # x - xhat = P (x - m)
          Cx=C[l,g]-torch.outer(m,mu[l,g])-torch.outer(mu[l,g],m)+torch.outer(m,m)
          e+=torch.trace(P.T@M[l,g]@P@Cx)/torch.trace(M[l,g]@C[l,g]); 
      errs.append(float(e/(L*G)))
    print('center',cen,kind,'score err @16,@32',errs)
def seed_ranks(n,lo,me,hi):
  r=[]
  for i in range(n):
    q=i/n; r.append(lo if (q<0.2 or q>0.8) else me if (q<0.4 or q>0.6) else hi)
  return torch.tensor(r)
def comp_fn(B,rk,rv):  # rk: dict (l,g)->rank or int; rv: function (l,g,n)->tensor ranks per token
  def f(l,k,v):
    n=k.shape[0]; ko=k.clone(); vo=v.clone()
    for g in range(G):
      dn,up,_,m=B['k',l,g]; r=rk(l,g)
      ko[:,g]=m+((k[:,g]-m)@dn[:r].T)@up[:r]
      dn,up,_,m=B['v',l,g]; rr=rv(l,g,n)
      c=(v[:,g]-m)@dn.T  # n,D
      c=c*(torch.arange(D)[None,:]<rr[:,None])
      vo[:,g]=m+c@up
    return ko,vo
  return f
def ppl(comp=None,window=0,sinks=0,vonly=False):
  nll=0;cntt=0;full=[]
  with torch.no_grad():
    for st in (0,256,512):
      ids=ev[st:st+512]; lg=forward(ids,comp,window=window,sinks=sinks,vonly=vonly); lp=torch.log_softmax(lg.double(),-1)
      tgt=torch.tensor(ids[1:]); lpt=lp[:-1].gather(1,tgt[:,None])[:,0]
      first=0 if st==0 else 255
      nll-=lpt[first:].sum(); cntt+=len(lpt[first:])
  return math.exp(nll/cntt)
base=ppl(); print('full',base,flush=True)
def rep(name,comp,window=0,sinks=0,vonly=False):
  p=ppl(comp,window,sinks,vonly); print('%-50s %.3f %+.1f%%'%(name,p,100*(p/base-1)),flush=True)
allk=lambda r:(lambda l,g:r)
seed=lambda lo,me,hi:(lambda l,g,n:seed_ranks(n,lo,me,hi))
uni=lambda r:(lambda l,g,n:torch.full((n,),r))
# allocation by global top-N eigenvalues
def alloc(B,kind,budget,rel=False):
  items=[]
  for l in range(L):
    for g in range(G):
      ew=B[kind,l,g][2].clamp(min=0); tot=ew.sum()
      for j in range(D): items.append((float(ew[j]/(tot if rel else 1)),l,g))
  items.sort(reverse=True); cntd={}
  for _,l,g in items[:budget*L*G]: cntd[l,g]=cntd.get((l,g),0)+1
  return {k2:max(1,cntd.get(k2,0)) for k2 in [(l,g) for l in range(L) for g in range(G)]}
for cen in ((False,True) if 'both' in which else (False,)):
  B=Bs[cen]; tag='center' if cen else 'plain'
  if 'mix' in which and cen:
    Bm={k2:(Bs[k2[0]=='k'][k2] ) for k2 in B}; rep('center keys only, k16 v seed',comp_fn(Bm,allk(16),seed(16,32,64)))
    Bm={k2:(Bs[k2[0]=='v'][k2] ) for k2 in B}; rep('center values only, k16 v seed',comp_fn(Bm,allk(16),seed(16,32,64)))
  if 'sink' in which:
    rep(tag+' k16 v seed, kv sinks=1 (vonly)',comp_fn(B,allk(16),seed(16,32,64)),sinks=1,vonly=True)
    rep(tag+' k16 v seed, kv sinks=4',comp_fn(B,allk(16),seed(16,32,64)),sinks=4)
  if 'combo' in which:
    ak=alloc(B,'k',16)
    rep(tag+' kalloc v seed',comp_fn(B,lambda l,g:ak[l,g],seed(16,32,64)))
    rep(tag+' kalloc v seed sinks1',comp_fn(B,lambda l,g:ak[l,g],seed(16,32,64)),sinks=1)
    rep(tag+' kalloc v seed sinks1 win16',comp_fn(B,lambda l,g:ak[l,g],seed(16,32,64)),sinks=1,window=16)
    rep(tag+' k16 v seed sinks1 win16',comp_fn(B,allk(16),seed(16,32,64)),sinks=1,window=16)
    rep(tag+' kalloc v seed sinks1 win32',comp_fn(B,lambda l,g:ak[l,g],seed(16,32,64)),sinks=1,window=32)
    rep(tag+' kalloc v uni32 sinks1 win16',comp_fn(B,lambda l,g:ak[l,g],uni(32)),sinks=1,window=16)
  if 'seed' in which: rep(tag+' k16 v seed',comp_fn(B,allk(16),seed(16,32,64)))
  if 'parts' in which:
    rep(tag+' k16 v64',comp_fn(B,allk(16),uni(64)))
    rep(tag+' k64 v seed',comp_fn(B,allk(64),seed(16,32,64)))
  if 'uni' in which: rep(tag+' k16 v32 uniform',comp_fn(B,allk(16),uni(32)))
  if 'alloc' in which:
    for rel in (False,True):
      ak=alloc(B,'k',16,rel); a1=alloc(B,'v',16,rel); a2=alloc(B,'v',32,rel)
      sv=lambda l,g,n,a1=a1,a2=a2:seed_ranks(n,a1[l,g],a2[l,g],64)
      rep(tag+' alloc rel=%d k16 v seed'%rel,comp_fn(B,lambda l,g:ak[l,g],sv))
      rep(tag+' alloc rel=%d k16 only'%rel,comp_fn(B,lambda l,g:ak[l,g],uni(64)))
  if 'win' in which:
    for w in (16,64):
      rep(tag+' k16 v seed window %d'%w,comp_fn(B,allk(16),seed(16,32,64)),window=w)
