package org.kerasdynamic.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;

/** Bounded stream reading (Android before API 33 has no {@code InputStream.readNBytes}). */
public final class Streams {
  private Streams() {}

  /** Reads until the end of {@code in} or {@code limit} bytes, whichever comes first. */
  public static byte[] readAtMost(InputStream in, int limit) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    byte[] block = new byte[1 << 16];
    int remaining = limit;
    for (int n; remaining > 0 && (n = in.read(block, 0, Math.min(block.length, remaining))) > 0; ) {
      out.write(block, 0, n);
      remaining -= n;
    }
    return out.toByteArray();
  }
}
