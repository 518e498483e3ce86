package org.kerasdynamic.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;

/**
 * An export folder on disk. As the Python runtime's {@code resolve_inside}: no path component
 * may be a symbolic link (even one pointing inside the folder), and only regular files are
 * opened, so a FIFO or a device cannot block or flood the reader.
 */
public final class DirectorySource implements FileSource {
  private final Path root;

  public DirectorySource(Path folder) throws IOException {
    this.root = folder.toRealPath();
  }

  @Override
  public byte[] read(String relativePath, long maxBytes) throws IOException {
    Path current = root;
    for (String part : relativePath.split("/")) {
      current = current.resolve(part);
      if (Files.isSymbolicLink(current)) {
        throw new FileIntegrityException(
            "'" + relativePath + "' goes through a symbolic link ('" + part + "'); export "
                + "folders hold plain files only.");
      }
    }
    if (!Files.isRegularFile(current, LinkOption.NOFOLLOW_LINKS)) {
      throw new FileIntegrityException(
          "'" + relativePath + "' is missing from the export folder " + root
              + " (or is not a regular file).");
    }
    int limit = (int) Math.min(maxBytes + 1, Integer.MAX_VALUE - 8);
    try (InputStream in = Files.newInputStream(current, LinkOption.NOFOLLOW_LINKS)) {
      return Streams.readAtMost(in, limit);
    }
  }

  @Override
  public String describe() {
    return root.toString();
  }
}
