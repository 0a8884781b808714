"""The optional native forwarding plane (native/): built where gcc and the
headers exist (Python's, libsrtp2's, OpenSSL's); elsewhere the install goes on without it and the Python
plane runs (media/native_plane.py says so once, with how to get it)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "roomcast.media._native",
            sources=["native/module.c"],
            depends=[
                "native/codecs.h",
                "native/dd.h",
                "native/dd_binding.h",
                "native/forward.h",
                "native/nack.h",
                "native/senders.h",
                "native/plane.h",
                "native/rtp.h",
                "native/srtp_gcm.h",
                "native/svc.h",
                "native/svc_binding.h",
                "native/svc_forward.h",
            ],
            libraries=["srtp2", "crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-std=gnu11"],
            optional=True,  # no compiler or headers: the Python plane runs
        )
    ]
)
