// Usage: gcc -O2 -I <zstd-sys>/zstd/lib scripts/bench_zstd_frames.c -lzstd -o /tmp/zb && /tmp/zb FILE
// (BENCHMARKS.md, "zstd frames and no spool-read copy"; run under flock /tmp/dr-bench.lock).
// CPU seconds of zstd level 1 on a file: one streaming frame fed 1 MiB at a time (dr before)
// vs one ZSTD_compress2 frame per 1 MiB (dr after); and decompression of each.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "zstd.h"
static double cpu(void){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec/1e9;}
#define CH (1<<20)
int main(int argc,char**argv){
  FILE*f=fopen(argv[1],"rb");fseek(f,0,SEEK_END);size_t n=ftell(f);fseek(f,0,SEEK_SET);
  char*in=malloc(n);fread(in,1,n,f);fclose(f);
  size_t cap=ZSTD_compressBound(n)+(n/CH+1)*64;char*out=malloc(cap);char*back=malloc(n+CH);
  for(int r=0;r<3;r++){
    // streaming
    ZSTD_CCtx*c=ZSTD_createCCtx();ZSTD_CCtx_setParameter(c,ZSTD_c_compressionLevel,1);
    double t0=cpu();size_t pos=0;ZSTD_outBuffer ob={out,cap,0};
    while(pos<n){size_t k=n-pos<CH?n-pos:CH;ZSTD_inBuffer ib={in+pos,k,0};
      while(ib.pos<ib.size){ZSTD_compressStream2(c,&ob,&ib,ZSTD_e_continue);} pos+=k;}
    ZSTD_inBuffer e={0,0,0};while(ZSTD_compressStream2(c,&ob,&e,ZSTD_e_end));
    double ts=cpu()-t0;size_t ss=ob.pos;
    ZSTD_DCtx*d=ZSTD_createDCtx();t0=cpu();
    ZSTD_inBuffer di={out,ss,0};size_t bp=0;char*tmp=malloc(ZSTD_DStreamOutSize());
    while(di.pos<di.size){ZSTD_outBuffer dob={tmp,ZSTD_DStreamOutSize(),0};ZSTD_decompressStream(d,&dob,&di);memcpy(back+bp,tmp,dob.pos);bp+=dob.pos;}
    double tds=cpu()-t0; if(bp!=n||memcmp(back,in,n))printf("stream mismatch\n");
    // frames
    t0=cpu();size_t o=0;
    for(pos=0;pos<n;pos+=CH){size_t k=n-pos<CH?n-pos:CH;o+=ZSTD_compress2(c,out+o,cap-o,in+pos,k);}
    double tf=cpu()-t0;size_t sf=o;
    t0=cpu();size_t ip=0;bp=0;
    while(ip<sf){size_t fs=ZSTD_findFrameCompressedSize(out+ip,sf-ip);unsigned long long cs=ZSTD_getFrameContentSize(out+ip,fs);
      bp+=ZSTD_decompressDCtx(d,back+bp,cs,out+ip,fs);ip+=fs;}
    double tdf=cpu()-t0; if(bp!=n||memcmp(back,in,n))printf("frames mismatch\n");
    printf("round %d: stream  compress %.2f s (%.0f MB/s) ratio %.4f decompress %.2f s | frames compress %.2f s (%.0f MB/s) ratio %.4f decompress %.2f s\n",
      r,ts,n/ts/1e6,(double)n/ss,tds,tf,n/tf/1e6,(double)n/sf,tdf);
    ZSTD_freeCCtx(c);ZSTD_freeDCtx(d);free(tmp);
  }
}
