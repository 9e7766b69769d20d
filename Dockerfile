# detour's image for those who build with Docker, from the same static
# binary and root file system that dist/image.sh writes as an OCI archive
# without Docker (README "Install"):
#   bash dist/image.sh && docker build -t detour:0.1.0 .
# Empty base: the binary (static), CA certificates, passwd naming 65532.
FROM scratch
COPY dist/rootfs/ /
# Non-root, matching the Deployment's runAsUser; no shell, no package manager.
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Writable for user 65532: `serve --dev` writes its certificates to ./certs.
WORKDIR /tmp
EXPOSE 8443 8080 5443
ENTRYPOINT ["/detour"]
CMD ["serve"]
