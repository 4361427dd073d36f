/* Kernel time of one small TCP write over loopback, by system call: writev of two buffers
 * (a WebSocket header and its payload, as clusterchat's direct writes), send of one buffer
 * (the floor), write of one, writev of one. A reader thread drains the other end.
 * BENCHMARKS.md ("Session 10's full run") quotes three rounds of:
 *   gcc -O2 -o /tmp/writev bench/micro/writev.c -lpthread
 *   for r in 1 2 3; do for m in 0 1 2 3; do /tmp/writev $m 400000; done; done
 * Loopback only; it stops by itself. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <pthread.h>
static void* reader(void* a){ int fd=*(int*)a; char buf[65536]; while(read(fd,buf,sizeof buf)>0); return 0; }
int main(int argc,char**argv){
  int mode=atoi(argv[1]); long n=atol(argv[2]);
  int ls=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in sa={0}; sa.sin_family=AF_INET; sa.sin_addr.s_addr=htonl(0x7f000001);
  bind(ls,(void*)&sa,sizeof sa); listen(ls,1); socklen_t l=sizeof sa; getsockname(ls,(void*)&sa,&l);
  int c=socket(AF_INET,SOCK_STREAM,0); connect(c,(void*)&sa,sizeof sa); int s=accept(ls,0,0);
  int one=1; setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
  pthread_t t; pthread_create(&t,0,reader,&c);
  char payload[120]; memset(payload,'a',sizeof payload); char hdr[2]={0x81,120}; char whole[122]; memcpy(whole,hdr,2); memcpy(whole+2,payload,120);
  struct rusage r0,r1; getrusage(RUSAGE_THREAD,&r0);
  for(long i=0;i<n;i++){
    if(mode==0){ struct iovec iv[2]={{hdr,2},{payload,120}}; writev(s,iv,2);} 
    else if(mode==1){ send(s,whole,122,MSG_NOSIGNAL);} 
    else if(mode==2){ write(s,whole,122);} else { struct iovec iv[1]={{whole,122}}; writev(s,iv,1);} 
    if((i&63)==0) usleep(0);
  }
  getrusage(RUSAGE_THREAD,&r1);
  printf("mode %d: user %.2f sys %.2f\n",mode,(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec)/1e6,(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec)/1e6);
  return 0;
}
