# radiusd image: the package and its dictionaries. pytricia ships as an sdist, hence gcc.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/radiusd
COPY pyproject.toml README.md ./
COPY radiusd ./radiusd
COPY dictionaries ./dictionaries
COPY schema ./schema
COPY docker ./docker
RUN pip install --no-cache-dir -e .
EXPOSE 1812/udp 1813/udp 9812/tcp
ENTRYPOINT ["radiusd"]
CMD ["serve"]
