# The asenet operator image, built with no registry and no pull: `FROM scratch`, one base
# layer unpacked from Debian packages, and the stripped release binary. `.ci/image.sh`
# prepares the build context (a folder, not the repository) and builds, checks and runs it:
#
#   rootfs/   libc6, libgcc-s1, ca-certificates, tzdata, netbase unpacked with
#             `dpkg-deb -x` (glibc, the CA bundle, zoneinfo, /etc/services; no shell, no
#             package manager), /etc/passwd and /etc/group with the user `nonroot`
#             (65532:65532), /tmp
#   asenet    `cargo build --release --bin asenet`, stripped
#
#   .ci/image.sh            # build, check and run it (podman, runc); prints the image size
#   podman build --pull=never -f Dockerfile -t asenet:dev <context prepared as above>
#
# The user 65532 is what the Helm chart's securityContext (runAsNonRoot,
# readOnlyRootFilesystem, capabilities drop ALL) expects. `asenet` handles SIGTERM itself
# (it is PID 1 in the container): a graceful stop, not a kill at the end of the grace period.

FROM scratch
COPY rootfs/ /
COPY asenet /usr/local/bin/asenet
USER 65532:65532
# mimalloc 3 keeps freed memory mapped for 1 s by default, so one plan's peak stays resident
# into the next; 0 gives it back at once (docs/benchmarks.md, tenth session). The chart sets
# the same variable from controller.allocatorPurgeDelayMs.
ENV MIMALLOC_PURGE_DELAY=0
# mimalloc 3 asks the kernel for transparent huge pages on its arenas (madvise), and a 2 MiB
# page is resident whole however little of it is used. 0 turns them off for the process
# (PR_SET_THP_DISABLE), whatever the node's THP setting: 10,000 specs, high-water mark
# 479 -> 446 MiB for ~4 % more CPU (docs/benchmarks.md, twelfth session). The chart sets it
# from controller.allocatorHugePages.
ENV MIMALLOC_ALLOW_THP=0
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/asenet"]
CMD ["controller"]
