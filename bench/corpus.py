"""A fixed, deterministic corpus with a realistic length spread: 5-120 words, lognormal, mean about 25."""

import numpy as np

_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but have an they
you were her she there been one all we their has would when if so no what up out who them some could said
time about into than only other new more these two may first then do any like my now over such our man me
even most made after also did many before must through back years where much your way well down should
because each just those people how too little state good very make world still own see men work long get
here between both life being under never day same another know while last might us great old year off come
since against go came right used take three himself few house use during without again place american
around however home small found thought went say part once general high upon school every does got united
left number course war until always away something fact though water less public put think almost hand
enough far took head yet government system better set told nothing night end why called eyes find going
look asked later knew point next program city business give group toward young let room president side
social given present several order national possible rather second face per among form important often
things looking early white case john become large big need four within felt along children saw best
church ever least power development light thought family interest want members others mind country area
done open god service certain kind problem began different door thus help sense means whole matter perhaps
itself york times law human line above name example action company hands local show whether five history
model data network query document answer language search vector embedding server request latency token
""".split()


def build_corpus(size: int = 2000, seed: int = 7) -> list[str]:
    """`size` sentences whose word counts are lognormal (median 20, mean about 25), clipped to 5..120."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(mean=np.log(20), sigma=0.68, size=size)), 5, 120).astype(int)
    words = np.array(_WORDS)
    return [" ".join(rng.choice(words, size=n)).capitalize() + "." for n in lengths]
