# Sourced by cross-build.sh and smoke-cross.sh: what each board architecture needs.
# Sets target, gnu (the cross toolchain's prefix), packages, qemu and cpu (the CPU
# model qemu emulates by default) for $arch, which is a Debian architecture name.
case "${arch:-}" in
arm64)
    # 64-bit Raspberry Pi OS / Debian: Pi 3, 4, 5, Zero 2 W.
    target=aarch64-unknown-linux-gnu
    gnu=aarch64-linux-gnu
    packages="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    qemu=qemu-aarch64-static
    cpu=cortex-a72
    ;;
armhf)
    # 32-bit Raspberry Pi OS: ARMv7 with NEON (Pi 2 and later in 32-bit mode).
    target=armv7-unknown-linux-gnueabihf
    gnu=arm-linux-gnueabihf
    packages="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
    qemu=qemu-arm-static
    cpu=cortex-a7
    ;;
*)
    echo "unknown architecture '${arch:-}': arm64 or armhf" >&2
    exit 2
    ;;
esac
